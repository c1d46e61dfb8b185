// SPDX-License-Identifier: MIT
/*
 * postcopy.c - what ferry-vm's API does with a migration in postcopy
 * (docs/api-socket.md, "Postcopy"): switch a running precopy now, go on
 * after a cut link (recover), let an operator run a paused source's copy
 * (resume with force), and refuse what would lose the guest (a cancel, an
 * exit that waits for a run that never ends).
 *
 * Past the switch the guest runs at the destination while its memory
 * still arrives: neither side holds all of it, and only the two of them
 * together, or an operator who knows one is gone for good, may end the
 * migration. The engine enforces it (a cancel is ignored, a paused run
 * waits for ferry_session_recover() or ferry_session_force_resume()); the
 * VMM says so to whoever asks, with what to do instead.
 */
#include <stdio.h>
#include <string.h>

#include "vm.h"

/* A run in postcopy (running or paused)? @st receives the live session's
 * statistics. Caller holds mig.lock. */
static bool live_postcopy(struct vm *vm, struct ferry_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->struct_size = sizeof(*st);
	if (!vm->mig.session || ferry_session_stats(vm->mig.session, st))
		return false;
	/* stats.postcopy is set at the transition, before the state says
	 * postcopy (the source is still "stopped" while POSTCOPY goes out). */
	return st->state == FERRY_STATE_POSTCOPY ||
	       st->state == FERRY_STATE_POSTCOPY_PAUSED ||
	       (st->postcopy && st->state != FERRY_STATE_COMPLETED &&
		st->state != FERRY_STATE_FAILED &&
		st->state != FERRY_STATE_CANCELLED);
}

/* The live session a postcopy command acts on, or NULL with @err saying
 * why there is none. Caller holds mig.lock. */
static ferry_session *command_session(struct vm *vm, const char *what,
				      char *err, size_t errlen)
{
	if (vm->mig.active && !vm->mig.session)
		snprintf(err, errlen, "the migration is still starting: %s once it runs",
			 what);
	else if (!vm->mig.active)
		snprintf(err, errlen, "no migration is running: nothing to %s",
			 what);
	return vm->mig.active ? vm->mig.session : NULL;
}

/* The session's reason for refusing a call, or @dflt without one. */
static void session_reason(ferry_session *s, const char *dflt, char *err,
			   size_t errlen)
{
	ferry_session_errmsg(s, err, errlen);
	if (!err[0])
		snprintf(err, errlen, "%s", dflt);
}

/**
 * vm_postcopy_switch() - the "postcopy" command: switch the running
 * precopy migration from this VM to postcopy now (the running pass is
 * cut short).
 * @vm: the VM.
 * @args: the command's arguments (none; may be NULL).
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: VM_OK, VM_ERR_ARG, or VM_ERR_STATE (nothing to switch, too
 * late, or the destination does not offer postcopy: @err says which).
 */
enum vm_err vm_postcopy_switch(struct vm *vm, json_object *args, char *err,
			       size_t errlen)
{
	enum vm_err e = VM_ERR_STATE;
	ferry_session *s;
	int rc;

	if (api_arg_known(args, NULL, 0, err, errlen))
		return VM_ERR_ARG;
	pthread_mutex_lock(&vm->mig.lock);
	s = command_session(vm, "switch to postcopy", err, errlen);
	if (!s)
		goto out;
	if (vm->mig.receiving) {
		snprintf(err, errlen, "this VM is the destination: the source switches to postcopy ('ferry postcopy SRC_SOCK')");
		goto out;
	}
	if (!strncmp(vm->mig.uri, "file:", 5)) {
		snprintf(err, errlen, "a snapshot file cannot ask for pages: only a migration to a destination switches to postcopy");
		goto out;
	}
	rc = ferry_session_postcopy(s);
	if (rc == -EINVAL)
		snprintf(err, errlen, "no precopy pass is running from this VM now (the migration starts or ends)");
	else if (rc)
		session_reason(s, ferry_strerror(rc), err, errlen);
	e = rc ? VM_ERR_STATE : VM_OK;
out:
	pthread_mutex_unlock(&vm->mig.lock);
	return e;
}

/**
 * vm_postcopy_recover() - the "recover" command: go on with a postcopy
 * whose link broke. A destination listens at the URI again (the status
 * shows where, as "listening"); a source connects there, and @client
 * follows the migration from now on (its events, then DONE).
 * @vm: the VM.
 * @args: {"uri": "tcp:HOST:PORT" | "unix:PATH"}.
 * @client: the API client asking.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: VM_OK, VM_ERR_ARG (a bad URI), or VM_ERR_STATE (not paused in
 * postcopy).
 */
enum vm_err vm_postcopy_recover(struct vm *vm, json_object *args,
				uint64_t client, char *err, size_t errlen)
{
	static const char *const known[] = { "uri" };
	enum vm_err e = VM_ERR_STATE;
	uint64_t was;
	ferry_session *s;
	const char *uri;
	int rc;

	if (api_arg_known(args, known, 1, err, errlen) ||
	    api_arg_uri(args, "uri", &uri, err, errlen))
		return VM_ERR_ARG;
	if (!strncmp(uri, "file:", 5)) {
		snprintf(err, errlen, "%.300s: postcopy recovers over a connection (tcp:HOST:PORT or unix:PATH), not a file",
			 uri);
		return VM_ERR_ARG;
	}
	pthread_mutex_lock(&vm->mig.lock);
	s = command_session(vm, "recover", err, errlen);
	if (!s)
		goto out;
	was = vm->mig.client;
	if (!vm->mig.receiving)
		vm->mig.client = client;
	rc = ferry_session_recover(s, uri);
	if (rc) {
		vm->mig.client = was;
		session_reason(s, ferry_strerror(rc), err, errlen);
		e = rc == -EINVAL ? VM_ERR_ARG : VM_ERR_STATE;
		goto out;
	}
	/* A source's migration goes on to the new URI: a cut at the
	 * moment repushing (vm/fault.c) shuts down connections to it. */
	if (!vm->mig.receiving)
		snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", uri);
	e = VM_OK;
out:
	pthread_mutex_unlock(&vm->mig.lock);
	return e;
}

/* Whether the last migration from this source ended unconfirmed:
 * "released" went out, the destination never said it runs, and the guest
 * stays paused here with its resources given up. Caller holds mig.lock. */
static bool unconfirmed(struct vm *vm)
{
	return !vm->mig.active && vm->mig.have_last && !vm->mig.receiving &&
	       !vm->mig.migrated && vm->mig.last.error == FERRY_EUNCONFIRMED &&
	       !guest_running(&vm->guest);
}

/*
 * The operator's way out of an unconfirmed switchover (the fault matrix's
 * row "kill-dst at after-released"): the session has ended, so the VMM
 * takes its resources back and runs its copy itself. The destination may
 * have read "released" and run the guest: if it did and still does, two
 * copies now run; the status and the report say so.
 */
static enum vm_err resume_unconfirmed(struct vm *vm, char *err, size_t errlen)
{
	static const char risk[] = "resumed here by force after an unconfirmed "
		"switchover: if the destination received \"released\" and runs "
		"its copy, two copies of the guest run";
	/* One forced resume at a time: two at once would both take the
	 * resources back. */
	static pthread_mutex_t force_lock = PTHREAD_MUTEX_INITIALIZER;
	enum vm_err e = VM_ERR_GENERIC;
	char local[512], what[400];
	const char *why = risk;
	bool held, shared;
	pid_t pid;
	int rc = 0;

	pthread_mutex_lock(&force_lock);
	pthread_mutex_lock(&vm->mig.lock);
	shared = vm->mig.last.local_fds;
	pthread_mutex_unlock(&vm->mig.lock);
	/* A local migration shares the memory and the sockets with the
	 * destination process: while it exists, resuming here would have two
	 * processes drive them, which is never what an operator wants. */
	if (shared) {
		int alive = vm_peer_state(&pid, 0);

		if (alive > 0) {
			snprintf(err, errlen, "the destination process (pid %d) "
				 "still exists and holds this guest's memory and "
				 "sockets: if it runs the guest ('ferry status' on "
				 "its socket), leave it to it and stop this process "
				 "(its copies close without a FIN or RST); if not, "
				 "stop it (kill %d), then 'resume --force' again",
				 (int)pid, (int)pid);
			e = VM_ERR_STATE;
			goto out;
		}
		vm_local_risk(alive, pid, what, sizeof(what));
		snprintf(local, sizeof(local), "resumed here by force after an "
			 "unconfirmed local switchover: %s", what);
		why = local;
	}
	/* The owner turns "source" when the resources are back: a retry
	 * after a resume that failed only retries the resume. Taking them
	 * twice would restore connections that are already live, fail, and
	 * drop them all with the guest's address. */
	pthread_mutex_lock(&vm->mig.lock);
	held = vm->mig.last.owner == FERRY_OWNER_SOURCE;
	pthread_mutex_unlock(&vm->mig.lock);
	if (!held && vm->ops.reacquire)
		rc = vm->ops.reacquire(vm);
	if (rc) {
		snprintf(err, errlen, "cannot take the guest's resources back: %s",
			 strerror(-rc));
		goto out;
	}
	pthread_mutex_lock(&vm->mig.lock);
	vm->mig.last.owner = FERRY_OWNER_SOURCE;
	pthread_mutex_unlock(&vm->mig.lock);
	rc = vm->ops.resume(vm);
	if (rc) {
		snprintf(err, errlen, "cannot resume the guest (its resources "
			 "are back here; 'resume --force' again retries only "
			 "the resume): %s", strerror(-rc));
		goto out;
	}
	e = VM_OK;
	pthread_mutex_lock(&vm->mig.lock);
	snprintf(vm->mig.last_err + strlen(vm->mig.last_err),
		 sizeof(vm->mig.last_err) - strlen(vm->mig.last_err), "; %s",
		 why);
	if (vm->mig.report) {
		json_object_object_add(vm->mig.report, "owner",
				       json_object_new_string("source"));
		json_object_object_add(vm->mig.report, "forced",
				       json_object_new_string(why));
	}
	pthread_mutex_unlock(&vm->mig.lock);
	vm_peer_forget();
	fprintf(stderr, "ferry-vm: forced: the source's copy of the guest runs "
		"again; %s\n", why);
out:
	pthread_mutex_unlock(&force_lock);
	return e;
}

/**
 * vm_postcopy_resume() - the "resume" command: on a source paused in
 * postcopy, give the migration up and run the source's copy of the guest;
 * on a source whose last migration ended unconfirmed (FERRY_EUNCONFIRMED),
 * take its resources back and run its copy.
 * @vm: the VM.
 * @args: {"force": true}, required: the guest may have run at the
 *	  destination since the switch.
 * @err: receives the reason on failure.
 * @errlen: size of @err.
 *
 * Return: VM_OK (the send ends with FERRY_EPOSTCOPY, or had ended
 * unconfirmed, and the guest runs here), VM_ERR_ARG, VM_ERR_STATE, or
 * VM_ERR_GENERIC (the resources or the resume failed).
 */
enum vm_err vm_postcopy_resume(struct vm *vm, json_object *args, char *err,
			       size_t errlen)
{
	static const char *const known[] = { "force" };
	enum vm_err e = VM_ERR_STATE;
	ferry_session *s;
	int force, rc;

	if (api_arg_known(args, known, 1, err, errlen) ||
	    api_arg_bool(args, "force", &force, err, errlen))
		return VM_ERR_ARG;
	if (force != 1) {
		snprintf(err, errlen, "'resume' needs \"force\": true: the guest may have run at the destination since the switch to postcopy, and if that copy still exists two copies run");
		return VM_ERR_ARG;
	}
	pthread_mutex_lock(&vm->mig.lock);
	if (unconfirmed(vm)) {
		pthread_mutex_unlock(&vm->mig.lock);
		return resume_unconfirmed(vm, err, errlen);
	}
	s = command_session(vm, "resume", err, errlen);
	if (!s)
		goto out;
	if (vm->mig.receiving) {
		snprintf(err, errlen, "this VM is the destination: only a source paused in postcopy resumes its own copy");
		goto out;
	}
	rc = ferry_session_force_resume(s);
	if (rc)
		session_reason(s, ferry_strerror(rc), err, errlen);
	else
		fprintf(stderr, "ferry-vm: forced: the source's copy of the guest runs again; the destination's copy may have run since the switch to postcopy\n");
	e = rc ? VM_ERR_STATE : VM_OK;
out:
	pthread_mutex_unlock(&vm->mig.lock);
	return e;
}

/**
 * vm_postcopy_refuse_cancel() - whether a cancel must be refused because
 * the migration is in postcopy (running or paused), and why. Caller holds
 * mig.lock.
 * @vm: the VM.
 * @err: receives the reason when refused.
 * @errlen: size of @err.
 *
 * Return: true to refuse.
 */
bool vm_postcopy_refuse_cancel(struct vm *vm, char *err, size_t errlen)
{
	struct ferry_stats st;

	if (!live_postcopy(vm, &st))
		return false;
	if (vm->mig.receiving)
		snprintf(err, errlen, "the migration is in postcopy: the guest runs here while its memory still arrives from the source, and cancelling would lose it; if the link broke, 'ferry recover DST_SOCK URI' listens for the source again");
	else
		snprintf(err, errlen, "the migration is in postcopy: the guest may already run at the destination, and neither side holds all of its memory, so cancelling would lose it; if the link broke, recover ('ferry recover DST_SOCK URI', then 'ferry migrate SRC_SOCK URI --resume'), or if the destination is gone for good use 'ferry resume SRC_SOCK --force' on the paused source");
	return true;
}

/**
 * vm_postcopy_live() - whether the live session is in postcopy (running or
 * paused), for the status. Caller holds mig.lock.
 * @vm: the VM.
 * @st: receives the session's statistics.
 *
 * Return: true when it is.
 */
bool vm_postcopy_live(struct vm *vm, struct ferry_stats *st)
{
	return live_postcopy(vm, st);
}

/**
 * vm_postcopy_abandon() - the process exits: a run in postcopy ignores the
 * cancel that stops other runs, and a paused one waits for an operator for
 * ever, so its thread is not joined and the guest's memory is not
 * unmapped under it (main() exits without). Says what is lost.
 * @vm: the VM.
 *
 * Return: true when the run is abandoned.
 */
bool vm_postcopy_abandon(struct vm *vm)
{
	struct ferry_stats st;
	bool pc, in;

	pthread_mutex_lock(&vm->mig.lock);
	pc = live_postcopy(vm, &st);
	in = vm->mig.receiving;
	if (pc)
		vm->mig.abandoned = true;
	pthread_mutex_unlock(&vm->mig.lock);
	if (pc)
		fprintf(stderr, "ferry-vm: exiting in %s: %s\n",
			ferry_state_name(st.state), in ?
			"the guest ran here with part of its memory still at the source; this copy ends with the process" :
			"the guest may run at the destination with part of its memory still here; the pages it still needs from this side are lost");
	return pc;
}

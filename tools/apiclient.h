/* SPDX-License-Identifier: MIT */
/*
 * apiclient.h - a small client for the JSON-lines API socket of ferry-vm
 * (docs/api-socket.md).
 *
 * One client is one UNIX stream connection. Commands are executed one at a
 * time: api_client_execute() sends a command with a fresh id and waits for
 * the reply carrying that id, handing every event that arrives meanwhile to
 * the event callback. api_client_wait() waits for events alone.
 *
 * Conventions: functions that can fail return 0 (or a count) on success and
 * a negative errno code on failure; api_client_errmsg() gives a one-line
 * description of the last failure. A client is used by one thread.
 */
#ifndef FERRY_TOOLS_APICLIENT_H
#define FERRY_TOOLS_APICLIENT_H

#include <signal.h>
#include <stddef.h>

struct json_object;
struct api_client;

/*
 * Called for each event: @event is its name ("STATE", "PASS", "PROGRESS",
 * "DONE"), @data its "data" member (may be NULL). Both are borrowed for the
 * duration of the call.
 */
typedef void (*api_event_fn)(void *opaque, const char *event,
			     struct json_object *data);

int api_client_open(const char *path, int timeout_ms, struct api_client **out,
		    char *err, size_t errlen);
void api_client_close(struct api_client *c);
struct json_object *api_client_greeting(const struct api_client *c);
const char *api_client_role(const struct api_client *c);
void api_client_set_events(struct api_client *c, api_event_fn fn,
			   void *opaque);
void api_client_set_interrupt(struct api_client *c,
			      const volatile sig_atomic_t *counter);
int api_client_execute(struct api_client *c, const char *command,
		       struct json_object *args, int timeout_ms,
		       struct json_object **ret);
int api_client_wait(struct api_client *c, int timeout_ms);
const char *api_client_errmsg(const struct api_client *c);

#endif /* FERRY_TOOLS_APICLIENT_H */

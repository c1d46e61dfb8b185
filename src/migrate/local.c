// SPDX-License-Identifier: MIT
/*
 * local.c - local migration by memory fds (ferry_config.local_fds): on one
 * host the guest's memory does not travel, its files do. The source sends
 * each region's backing descriptor over the UNIX main connection
 * (MEMORY_FDS, the descriptors attached with SCM_RIGHTS) while the guest
 * still runs, then pauses for the state and the usual switchover. The
 * destination checks every file (type, size, page size, alignment) and
 * maps it MAP_SHARED | MAP_FIXED over its own region: both processes now
 * see the same pages, and nothing is copied.
 *
 * Until the guest runs at the destination, the source owns it and may
 * resume: the destination therefore never writes the shared pages before
 * RELEASED, and a destination whose attempt fails puts its own memory
 * back over the region (its region's file, or fresh anonymous memory), so
 * that a later attempt cannot write into the source's guest.
 *
 * Device descriptors (DEVICE_FDS, FERRY_CAP_DEVICE_FDS): once the guest is
 * paused, the VMM's save_fds names descriptors its devices own (a network
 * device's sockets), and they travel the same way, before STATE; the
 * destination's load_fds takes duplicates. Both processes then hold the
 * same open files (sockets, listener included): nothing is re-created
 * and, while either holds one, closing the other's copy sends nothing.
 * Who may read or write them follows the guest's owner (docs/network.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migrate/receive.h"
#include "migrate/sender.h"

/* The page size of a backing file: hugetlbfs reports its huge page size
 * as the block size; any other file maps in 4 KiB pages. */
static uint32_t file_page_size(const struct stat *st)
{
	uint64_t b = (uint64_t)st->st_blksize;

	if (b >= FY_FDS_PAGE_MIN && b <= FY_FDS_PAGE_MAX && !(b & (b - 1)))
		return (uint32_t)b;
	return FY_FDS_PAGE_MIN;
}

/* ---- source ---- */

/* One region's entry of MEMORY_FDS, from its file; a message on refusal. */
static int describe_region(ferry_session *s, uint32_t i,
			   struct fy_memfd_entry *e)
{
	const struct fy_region *r = &s->regions[i];
	struct stat st;

	if (r->fd < 0)
		return fy_session_fail(s, -EINVAL,
				       "region %s has no backing descriptor (FERRY_REGION_FD): a local migration passes the memory's file, so guest RAM must be a memfd or a hugetlb memfd (ferry-vm: --memory-backend memfd or hugetlb)",
				       r->name);
	if (fstat(r->fd, &st) < 0)
		return fy_session_fail(s, -errno, "region %s: fstat of its fd %d: %s",
				       r->name, r->fd, strerror(errno));
	e->region = i;
	e->page_size = file_page_size(&st);
	e->size = r->size;
	e->fd_offset = r->fd_offset;
	if (!S_ISREG(st.st_mode))
		return fy_session_fail(s, -EINVAL,
				       "region %s: its fd %d is not a file that can be mapped (a memfd or a hugetlb memfd)",
				       r->name, r->fd);
	if ((uint64_t)st.st_size < r->fd_offset + r->size ||
	    r->size % e->page_size || r->fd_offset % e->page_size)
		return fy_session_fail(s, -EINVAL,
				       "region %s: %llu bytes at offset %llu do not fit its file of %llu bytes in %u-byte pages",
				       r->name, (unsigned long long)r->size,
				       (unsigned long long)r->fd_offset,
				       (unsigned long long)st.st_size,
				       e->page_size);
	return 0;
}

/**
 * fy_local_check() - before connecting: may this send be local? The URI
 * must be a UNIX socket, and every region must have a backing file.
 * @x: the sender.
 * @u: the parsed URI.
 *
 * Return: 0 (x->lfds filled), or -EINVAL with the session's message
 * saying what to change.
 */
int fy_local_check(struct sender *x, const struct fy_uri *u)
{
	ferry_session *s = x->s;
	int rc;

	if (u->kind == FY_URI_FD && !fy_transport_is_unix(u->fd))
		return fy_session_fail(s, -EINVAL,
				       "local_fds needs a UNIX socket to pass the memory's descriptors; fd:%d is not one",
				       u->fd);
	if (u->kind != FY_URI_UNIX && u->kind != FY_URI_FD)
		return fy_session_fail(s, -EINVAL,
				       "local_fds needs a unix: URI: the memory's descriptors pass over a UNIX socket, between processes of one host (%s is %s)",
				       u->kind == FY_URI_TCP ? "a tcp: address" : "a file",
				       u->kind == FY_URI_TCP ? "TCP" : "not a socket");
	if (!s->nregions)
		return fy_session_fail(s, -EINVAL, "no memory regions to pass");
	memset(&x->lfds, 0, sizeof(x->lfds));
	for (uint32_t i = 0; i < s->nregions; i++) {
		rc = describe_region(s, i, &x->lfds.e[i]);
		if (rc)
			return rc;
	}
	x->lfds.count = (uint32_t)s->nregions;
	x->local = true;
	return 0;
}

/**
 * fy_local_send() - after negotiation, with the guest still running: pass
 * the files (MEMORY_FDS). The pause, the state and the switchover follow
 * as after precopy.
 * @x: the sender, fy_local_check() passed.
 *
 * Return: 0 once the destination answered that it maps them; -ENOTSUP
 * when it does not offer local fds; or the request's failure.
 */
int fy_local_send(struct sender *x)
{
	ferry_session *s = x->s;
	int fds[FY_MAX_REGIONS];
	struct fy_buf b;
	int rc;

	if (!(x->peer.capabilities & FERRY_CAP_LOCAL_FDS))
		return fy_session_fail(s, -ENOTSUP,
				       "the destination does not offer local migration by fds (it is an older ferry, it disabled local-fds, or it did not accept on a UNIX socket)");
	if (!fy_transport_is_unix(x->ch.fd))
		return fy_session_fail(s, -EINVAL,
				       "local_fds: the connection is not a UNIX socket");
	if (s->cfg.connections > 1)
		fy_session_log(s, 1, "a local migration copies no memory: one connection, not %u",
			       s->cfg.connections);
	for (uint32_t i = 0; i < x->lfds.count; i++)
		fds[i] = s->regions[i].fd;
	x->sm.local_fds = true;
	x->sm.device_fds = s->ops.save_fds &&
			   (x->peer.capabilities & FERRY_CAP_DEVICE_FDS);
	if (x->sm.device_fds) {
		x->devfds = calloc(FY_DEVFDS_MAX, sizeof(*x->devfds));
		x->devkind = calloc(FY_DEVFDS_MAX, sizeof(*x->devkind));
		if (!x->devfds || !x->devkind)
			return fy_session_fail(s, -ENOMEM, "out of memory");
	}
	pthread_mutex_lock(&s->lock);
	s->stats.local_fds = true;
	s->stats.connections = 1;
	pthread_mutex_unlock(&s->lock);
	fy_buf_init(&b);
	rc = fy_memory_fds_encode(&b, &x->lfds);
	if (rc)
		rc = fy_session_fail(s, rc, "encoding MEMORY_FDS: %s",
				     ferry_strerror(rc));
	else
		rc = fy_snd_request_fds(x, FY_REC_MEMORY_FDS, &b, "MEMORY_FDS",
					fds, x->lfds.count);
	fy_buf_free(&b);
	if (!rc)
		fy_session_log(s, 2, "the destination maps the memory of %u region%s from our files",
			       x->lfds.count, x->lfds.count == 1 ? "" : "s");
	return rc;
}

/* The kind DEVICE_FDS gives descriptor @fd; -EBADF for one not open. */
static int fd_kind(int fd, uint32_t *kind)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return -EBADF;
	*kind = S_ISSOCK(st.st_mode) ? FY_DEVFD_SOCKET : FY_DEVFD_OTHER;
	return 0;
}

/**
 * fy_local_send_devices() - the guest paused, on a session with device
 * fds: ask the VMM for its devices' descriptors (save_fds) and pass them
 * (DEVICE_FDS), before the state.
 * @x: the sender, fy_local_send() passed with device fds negotiated.
 *
 * Return: 0 once the destination's VMM holds them; a failure (the VMM's,
 * a descriptor that is not open, the request's) with the session's
 * message. Either way the VMM keeps its own descriptors.
 */
int fy_local_send_devices(struct sender *x)
{
	ferry_session *s = x->s;
	struct fy_device_fds m = { .kind = x->devkind };
	size_t n = 0;
	struct fy_buf b;
	int rc;

	rc = s->ops.save_fds(s->cfg.opaque, x->devfds, FY_DEVFDS_MAX, &n);
	if (rc)
		return fy_session_vmm_fail(s, rc, "save_fds");
	if (n > FY_DEVFDS_MAX)
		return fy_session_fail(s, FERRY_EVMM,
				       "save_fds returned %zu descriptors, at most %u fit",
				       n, FY_DEVFDS_MAX);
	for (size_t i = 0; i < n; i++)
		if (fd_kind(x->devfds[i], &x->devkind[i]))
			return fy_session_fail(s, FERRY_EVMM,
					       "save_fds: descriptor %zu (%d) is not open",
					       i, x->devfds[i]);
	m.count = (uint32_t)n;
	fy_buf_init(&b);
	rc = fy_device_fds_encode(&b, &m);
	if (rc)
		rc = fy_session_fail(s, rc, "encoding DEVICE_FDS: %s",
				     ferry_strerror(rc));
	else
		rc = fy_snd_request_fds(x, FY_REC_DEVICE_FDS, &b, "DEVICE_FDS",
					x->devfds, (unsigned)n);
	fy_buf_free(&b);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->lock);
	s->stats.device_fds = (uint32_t)n;
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 2, "the destination's VMM holds the %zu descriptor%s of our devices",
		       n, n == 1 ? "" : "s");
	return 0;
}

/**
 * fy_local_free() - the sender's arrays for device descriptors.
 * @x: the sender.
 */
void fy_local_free(struct sender *x)
{
	free(x->devfds);
	free(x->devkind);
	x->devfds = NULL;
	x->devkind = NULL;
}

/* ---- destination ---- */

/**
 * fy_local_init() - a receiver that holds no file and mapped nothing.
 * @x: the receiver.
 */
void fy_local_init(struct receiver *x)
{
	x->local.n = 0;
	x->local.mapped = 0;
	for (unsigned i = 0; i < FY_MAX_REGIONS; i++)
		x->local.fd[i] = -1;
}

/* Close the received files (their mappings keep the memory). */
static void close_received(struct receiver *x)
{
	for (unsigned i = 0; i < x->local.n; i++) {
		if (x->local.fd[i] >= 0)
			close(x->local.fd[i]);
		x->local.fd[i] = -1;
	}
	x->local.n = 0;
}

/* Check @e and its file @fd against region @r of this side. */
static int check_file(struct receiver *x, const struct fy_region *r,
		      const struct fy_memfd_entry *e, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		snprintf(x->err, sizeof(x->err), "region %s: fstat of the received file: %s",
			 r->name, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(x->err, sizeof(x->err), "region %s: the received descriptor is not a file that can be mapped",
			 r->name);
		return -EINVAL;
	}
	if (e->size != r->size ||
	    (uint64_t)st.st_size < e->fd_offset + e->size) {
		snprintf(x->err, sizeof(x->err),
			 "region %s: %llu bytes at offset %llu of a %llu-byte file, this side's region has %llu",
			 r->name, (unsigned long long)e->size,
			 (unsigned long long)e->fd_offset,
			 (unsigned long long)st.st_size,
			 (unsigned long long)r->size);
		return FERRY_EMISMATCH;
	}
	if (file_page_size(&st) != e->page_size) {
		snprintf(x->err, sizeof(x->err),
			 "region %s: the file has %u-byte pages, MEMORY_FDS says %u",
			 r->name, file_page_size(&st), e->page_size);
		return FERRY_EMISMATCH;
	}
	if ((uintptr_t)r->host % e->page_size) {
		snprintf(x->err, sizeof(x->err),
			 "region %s: the source's memory is in %u KiB pages, but this side maps the region at %p, not aligned to them (give the destination the source's memory backing)",
			 r->name, e->page_size >> 10, (void *)r->host);
		return FERRY_EMISMATCH;
	}
	return 0;
}

/* Put this side's own memory back over region @i. */
static void unmap_one(struct receiver *x, unsigned i)
{
	const struct fy_region *r = &x->s->regions[i];
	void *p;

	/* Without a reservation: a hugetlb file that was mapped so (a VMM
	 * that expected its memory by fd) must not fail here for want of
	 * free huge pages. */
	if (r->fd >= 0)
		p = mmap(r->host, r->size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED | MAP_NORESERVE, r->fd,
			 (off_t)r->fd_offset);
	else
		p = mmap(r->host, r->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
			 -1, 0);
	if (p != MAP_FAILED)
		return;
	/* Never leave the source's pages here: an inaccessible range at
	 * least faults instead of writing into the source's guest. */
	fy_session_log(x->s, 0, "region %s: cannot map this side's memory back (%s); it is left inaccessible",
		       r->name, strerror(errno));
	(void)mmap(r->host, r->size, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
}

/**
 * fy_local_undo() - the attempt failed before the guest ran here: unmap
 * the source's files (this side's own memory goes back over the regions)
 * and close them.
 * @x: the receiver.
 */
void fy_local_undo(struct receiver *x)
{
	for (unsigned i = 0; i < x->local.mapped; i++)
		unmap_one(x, i);
	if (x->local.mapped)
		fy_session_log(x->s, 1, "the source's memory is unmapped again (the attempt failed before the guest ran here)");
	x->local.mapped = 0;
	close_received(x);
}

/* Take the descriptors of @m out of the connection's stash. */
static int take_fds(struct receiver *x, const struct fy_memory_fds *m)
{
	struct fy_fd_stash *st = &x->ch.rx.fds;
	int rc = 0;

	if (st->overflow || st->n != m->count) {
		snprintf(x->err, sizeof(x->err),
			 "MEMORY_FDS describes %u files but %s%u descriptors came with it",
			 m->count, st->overflow ? "more than " : "", st->n);
		rc = FERRY_EPROTO;
	} else if (m->count != x->s->nregions) {
		snprintf(x->err, sizeof(x->err),
			 "MEMORY_FDS carries %u files, this side has %zu regions",
			 m->count, x->s->nregions);
		rc = FERRY_EMISMATCH;
	}
	if (rc) {
		fy_fd_stash_clear(st);
		return rc;
	}
	for (unsigned i = 0; i < st->n; i++)
		x->local.fd[i] = st->fd[i];
	x->local.n = st->n;
	st->n = 0;
	return 0;
}

/*
 * Region @i has a descriptor of its own, which the received file replaces
 * once the guest runs here (fy_local_commit()): refuse now, before
 * anything is mapped, what would leave that descriptor naming a file that
 * does not back the region (another offset, or this side's regions
 * sharing a descriptor that the source backs with different files).
 */
static int check_own_fd(struct receiver *x, const struct fy_memory_fds *m,
			unsigned i)
{
	const struct fy_region *r = &x->s->regions[i];
	struct stat a, b;

	if (r->fd < 0)
		return 0;
	if (r->fd_offset != m->e[i].fd_offset) {
		snprintf(x->err, sizeof(x->err),
			 "region %s: its file is at offset %llu here, the source's at %llu",
			 r->name, (unsigned long long)r->fd_offset,
			 (unsigned long long)m->e[i].fd_offset);
		return FERRY_EMISMATCH;
	}
	for (unsigned j = 0; j < i; j++) {
		if (x->s->regions[j].fd != r->fd)
			continue;
		if (fstat(x->local.fd[i], &a) || fstat(x->local.fd[j], &b) ||
		    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
			snprintf(x->err, sizeof(x->err),
				 "regions %s and %s share a descriptor here, but the source backs them with different files",
				 x->s->regions[j].name, r->name);
			return FERRY_EMISMATCH;
		}
	}
	return 0;
}

/**
 * fy_local_on_fds() - MEMORY_FDS: check every file, then map each over
 * its region. A failure leaves nothing mapped and nothing open.
 * @x: the receiver; the body in x->ch.rx.in, the descriptors in the
 *     connection's stash.
 *
 * Return: 0, or a negative code with x->err set.
 */
int fy_local_on_fds(struct receiver *x)
{
	ferry_session *s = x->s;
	struct fy_memory_fds m;
	char why[160];
	int rc;

	if (fy_memory_fds_decode(x->ch.rx.in.data, x->ch.rx.in.len, &m, why,
				 sizeof(why))) {
		fy_fd_stash_clear(&x->ch.rx.fds);
		snprintf(x->err, sizeof(x->err), "malformed MEMORY_FDS: %s", why);
		return -EBADMSG;
	}
	rc = take_fds(x, &m);
	for (unsigned i = 0; !rc && i < m.count; i++) {
		if (m.e[i].region != i) {
			snprintf(x->err, sizeof(x->err),
				 "MEMORY_FDS entry %u is region %u: every region, in order", i,
				 m.e[i].region);
			rc = FERRY_EMISMATCH;
		} else {
			rc = check_file(x, &s->regions[i], &m.e[i], x->local.fd[i]);
		}
	}
	for (unsigned i = 0; !rc && i < m.count; i++)
		rc = check_own_fd(x, &m, i);
	for (unsigned i = 0; !rc && i < m.count; i++) {
		const struct fy_region *r = &s->regions[i];

		x->local.fd_offset[i] = m.e[i].fd_offset;
		/* Counted first: a MAP_FIXED that fails may already have
		 * taken this side's mapping away, and undo must put it back. */
		x->local.mapped = i + 1;
		if (mmap(r->host, r->size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, x->local.fd[i],
			 (off_t)m.e[i].fd_offset) == MAP_FAILED) {
			rc = -errno;
			snprintf(x->err, sizeof(x->err), "region %s: mapping the source's file: %s",
				 r->name, strerror(errno));
		}
	}
	if (rc) {
		fy_local_undo(x);
		return rc;
	}
	pthread_mutex_lock(&s->lock);
	s->stats.local_fds = true;
	pthread_mutex_unlock(&s->lock);
	fy_session_log(s, 2, "mapped the source's memory: %u region%s, nothing copied",
		       m.count, m.count == 1 ? "" : "s");
	return 0;
}

/**
 * fy_local_commit() - RELEASED: the guest is this side's now. A region
 * whose own fd had the source's offset takes the received file in its
 * place (dup3 onto the same number), so that it backs the region again
 * and can be passed on; the received descriptors are closed.
 * @x: the receiver.
 */
void fy_local_commit(struct receiver *x)
{
	ferry_session *s = x->s;

	if (!x->local.n)
		return;
	for (unsigned i = 0; i < x->local.n && i < x->local.mapped; i++) {
		const struct fy_region *r = &s->regions[i];
		int fl;

		if (r->fd < 0)
			continue;
		if (r->fd_offset != x->local.fd_offset[i]) {
			fy_session_log(s, 1, "region %s: its fd keeps its own file (offset %llu, the source's is at %llu)",
				       r->name, (unsigned long long)r->fd_offset,
				       (unsigned long long)x->local.fd_offset[i]);
			continue;
		}
		fl = fcntl(r->fd, F_GETFD);
		if (dup3(x->local.fd[i], r->fd,
			 fl >= 0 && (fl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
			fy_session_log(s, 0, "region %s: cannot make its fd %d the source's file: %s",
				       r->name, r->fd, strerror(errno));
	}
	x->local.mapped = 0;
	close_received(x);
	pthread_mutex_lock(&s->lock);
	s->stats.wire_bytes = fy_chan_wire_bytes(&x->ch);
	pthread_mutex_unlock(&s->lock);
}

/* The descriptors of DEVICE_FDS are those in the stash, of the kinds the
 * body says: x->err and a code when not. */
static int check_devices(struct receiver *x, const struct fy_device_fds *m)
{
	struct fy_fd_stash *st = &x->ch.rx.fds;
	uint32_t k = 0;

	if (st->overflow || st->n != m->count) {
		snprintf(x->err, sizeof(x->err),
			 "DEVICE_FDS describes %u descriptors but %s%u came with it",
			 m->count, st->overflow ? "more than " : "", st->n);
		return FERRY_EPROTO;
	}
	for (uint32_t i = 0; i < m->count; i++) {
		if (fd_kind(st->fd[i], &k) || k != m->kind[i]) {
			snprintf(x->err, sizeof(x->err),
				 "DEVICE_FDS: descriptor %u is %s, the source says %s",
				 i, k == FY_DEVFD_SOCKET ? "a socket" : "not a socket",
				 m->kind[i] == FY_DEVFD_SOCKET ? "a socket" : "not a socket");
			return FERRY_EMISMATCH;
		}
	}
	return 0;
}

/**
 * fy_local_on_device_fds() - DEVICE_FDS: check the descriptors that came
 * with it against the body and hand them to the VMM (load_fds), which
 * owns them from then on. On any failure they are closed here.
 * @x: the receiver; the body in x->ch.rx.in, the descriptors in the
 *     connection's stash.
 *
 * Return: 0, or a negative code with x->err set.
 */
int fy_local_on_device_fds(struct receiver *x)
{
	ferry_session *s = x->s;
	struct fy_fd_stash *st = &x->ch.rx.fds;
	struct fy_device_fds m;
	char why[160];
	int rc;

	/* The source paused before it sent this: its pause starts here. */
	if (!x->t_final)
		x->t_final = fy_now_ns();
	m.kind = calloc(FY_DEVFDS_MAX, sizeof(*m.kind));
	if (!m.kind) {
		fy_fd_stash_clear(st);
		snprintf(x->err, sizeof(x->err), "out of memory");
		return -ENOMEM;
	}
	if (fy_device_fds_decode(x->ch.rx.in.data, x->ch.rx.in.len, &m, why,
				 sizeof(why))) {
		snprintf(x->err, sizeof(x->err), "malformed DEVICE_FDS: %s", why);
		rc = -EBADMSG;
	} else {
		rc = check_devices(x, &m);
	}
	free(m.kind);
	if (!rc) {
		rc = s->ops.load_fds(s->cfg.opaque, st->n ? st->fd : NULL, st->n);
		if (rc) {
			char vmm[256] = "";

			if (s->ops.errmsg)
				s->ops.errmsg(s->cfg.opaque, vmm, sizeof(vmm));
			vmm[sizeof(vmm) - 1] = 0;
			snprintf(x->err, sizeof(x->err), "load_fds failed: %s%s%s",
				 ferry_strerror(rc), vmm[0] ? ": " : "", vmm);
			rc = FERRY_EVMM;
		}
	}
	if (rc) {
		fy_fd_stash_clear(st);
		return rc;
	}
	pthread_mutex_lock(&s->lock);
	s->stats.device_fds = m.count;
	pthread_mutex_unlock(&s->lock);
	/* The VMM owns them now: forget them without closing. */
	st->n = 0;
	fy_session_log(s, 2, "the VMM took the %u descriptor%s of the source's devices",
		       m.count, m.count == 1 ? "" : "s");
	return 0;
}

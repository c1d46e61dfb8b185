/* SPDX-License-Identifier: MIT */
/*
 * snapfile.h - the engine's side of snapshot files in the mapped layout
 * (src/wire/snapfile.h): writing passes into page slots while the guest
 * runs, finishing the file, and restoring from it, eagerly or lazily.
 */
#ifndef FY_MIGRATE_SNAPFILE_H
#define FY_MIGRATE_SNAPFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "migrate/engine.h"
#include "wire/snapfile.h"

/* Default I/O threads of a file (ferry_config.io_threads = 0). */
#define FY_SNAP_THREADS 4
/* Pages a thread takes at once: large aligned I/O. */
#define FY_SNAP_CHUNK (8u << 20)

struct fy_snapw;

/*
 * fy_snapw_open() - create PATH.partial for the session's regions, sized
 * for them (sparse), opened for direct I/O where the file system takes
 * it. Fails the session with a message.
 */
int fy_snapw_open(ferry_session *s, const char *path, struct fy_snapw **out);

/*
 * fy_snapw_pass() - write every page of @ranges into its slot with the
 * configured threads: data pages with their hashes, zero pages as holes.
 * Returns 0 or the session's error; *@secs receives the wall time.
 */
int fy_snapw_pass(struct fy_snapw *w, const struct fy_ranges *ranges,
		  double *secs);

/*
 * fy_snapw_finish() - write the page table, the data map and @state,
 * sync, write the superblock last, sync, and rename PATH.partial to PATH.
 */
int fy_snapw_finish(struct fy_snapw *w, const void *state, size_t len);

/* Bytes the file has (or will have) and its image digest, once finished. */
uint64_t fy_snapw_size(const struct fy_snapw *w);
uint64_t fy_snapw_digest(const struct fy_snapw *w);

/* Close, and remove PATH.partial unless it was renamed. NULL harmless. */
void fy_snapw_free(struct fy_snapw *w);

/*
 * fy_snap_restore() - the destination's whole run for a mapped file
 * (ferry_session_receive() hands over once it saw the magic): check the
 * file against the session's regions, read memory (every page checked
 * against its hash) or, with cfg.lazy, load it on demand after resume,
 * load the state, acquire and resume.
 */
int fy_snap_restore(ferry_session *s, const char *path);

#endif /* FY_MIGRATE_SNAPFILE_H */

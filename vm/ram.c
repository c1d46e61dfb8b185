// SPDX-License-Identifier: MIT
/*
 * ram.c - guest RAM of ferry-vm: the three backings (memfd, anonymous
 * memory with transparent huge pages, hugetlb memfd), sizing the hugetlb
 * pool, and populating RAM after start-up (docs/memory-backends.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Population goes this far between progress updates and abort checks.
 * MADV_POPULATE_WRITE holds the mmap lock while it runs, so every mmap,
 * munmap or brk of the other threads (the API's, a receiver's) waits for
 * the slice: on this virtualised host touching memory that another
 * process just freed costs up to 3 s/GiB, about 25 ms per slice. */
#define POPULATE_SLICE (8ull << 20)

/* A /proc/meminfo field ("MemAvailable") in kB, or UINT64_MAX. */
static uint64_t meminfo_kb(const char *key)
{
	unsigned long long kb;
	char line[128], name[64];
	uint64_t v = UINT64_MAX;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return v;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63[^:]: %llu", name, &kb) == 2 &&
		    !strcmp(name, key)) {
			v = kb;
			break;
		}
	}
	fclose(f);
	return v;
}

/* MemAvailable in bytes, or UINT64_MAX if unknown. */
static uint64_t mem_available(void)
{
	uint64_t kb = meminfo_kb("MemAvailable");

	return kb == UINT64_MAX ? kb : kb << 10;
}

static const char *const backend_names[] = {
	[VM_MEM_MEMFD] = "memfd",
	[VM_MEM_ANON] = "anon",
	[VM_MEM_HUGETLB] = "hugetlb",
};

/**
 * vm_backend_name() - the command-line name of a guest RAM backing.
 * @b: the backing.
 *
 * Return: a static string ("memfd"), "unknown" for an invalid value.
 */
const char *vm_backend_name(enum vm_backend b)
{
	return vm_name_of(backend_names, sizeof(backend_names) / sizeof(backend_names[0]), b);
}

/**
 * vm_backend_parse() - parse a guest RAM backing name.
 * @s: the name.
 * @out: receives the backing.
 *
 * Return: 0, or -EINVAL for an unknown name.
 */
int vm_backend_parse(const char *s, enum vm_backend *out)
{
	int v = vm_name_find(backend_names, sizeof(backend_names) / sizeof(backend_names[0]), s);

	if (v < 0)
		return v;
	*out = (enum vm_backend)v;
	return 0;
}

/* RAM of a local destination (--local): the source's files replace it. */
static bool ram_by_fd;

/**
 * guest_ram_by_fd() - the next guest_ram_map() makes RAM that a local
 * migration maps the source's files over: a memfd as usual (untouched, it
 * costs nothing), a hugetlb memfd mapped without reserving huge pages, so
 * that a host with room for one guest's pages can replace the VMM under
 * it.
 */
void guest_ram_by_fd(void)
{
	ram_by_fd = true;
}

/* memfd (and hugetlb): shared file memory, so it can also be handed to a
 * local destination by fd. shmem THP is off on the project's hosts, so a
 * plain memfd is backed by 4 KiB pages. */
static int ram_memfd(struct guest *g, unsigned flags)
{
	int noreserve = ram_by_fd ? MAP_NORESERVE : 0;

	g->memfd = memfd_create("ferry-guest", MFD_CLOEXEC | flags);
	if (g->memfd < 0)
		return -errno;
	if (ftruncate(g->memfd, (off_t)g->mem_size) < 0)
		return -errno;
	/* For hugetlb this reserves every huge page, or fails now (not
	 * for a local destination: the source's pages come instead). */
	g->ram = mmap(NULL, g->mem_size, PROT_READ | PROT_WRITE,
		      MAP_SHARED | noreserve, g->memfd, 0);
	if (g->ram == MAP_FAILED) {
		g->ram = NULL;
		return -errno;
	}
	/* Huge pages wherever the backing allows: shmem gets them when
	 * /sys/kernel/mm/transparent_hugepage/shmem_enabled is "advise" or
	 * more (it is "never" on the machines we measured, so 4 KiB). */
	if (!(flags & MFD_HUGETLB))
		(void)madvise(g->ram, g->mem_size, MADV_HUGEPAGE);
	return 0;
}

/* anon: private anonymous memory with transparent huge pages (THP is in
 * "madvise" mode here). The mapping starts on a 2 MiB boundary so every
 * 2 MiB of guest RAM can be one huge page. No fd: the engine gets -1. */
static int ram_anon(struct guest *g)
{
	size_t len = g->mem_size + VM_HUGE_SIZE;
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *a;

	if (p == MAP_FAILED)
		return -errno;
	a = (uint8_t *)(((uintptr_t)p + VM_HUGE_SIZE - 1) &
			~(uintptr_t)(VM_HUGE_SIZE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (p + len > a + g->mem_size)
		munmap(a + g->mem_size, (size_t)(p + len - (a + g->mem_size)));
	g->ram = a;
	/* Only a hint: with THP off the guest simply gets 4 KiB pages. */
	(void)madvise(g->ram, g->mem_size, MADV_HUGEPAGE);
	return 0;
}

/* Set /proc/sys/vm/nr_hugepages; 0 or -errno. */
static int nr_hugepages_set(uint64_t n)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "we");
	int rc = 0;

	if (!f)
		return -errno;
	if (fprintf(f, "%llu\n", (unsigned long long)n) < 0)
		rc = -EIO;
	if (fclose(f) && !rc)
		rc = -errno;
	return rc;
}

/* Huge pages free and not reserved by some other mapping. */
static uint64_t hugetlb_spare(void)
{
	uint64_t fr = meminfo_kb("HugePages_Free"), rs = meminfo_kb("HugePages_Rsvd");

	return fr == UINT64_MAX || rs == UINT64_MAX || rs > fr ? 0 : fr - rs;
}

/* Make @need default-size huge pages spare, growing the pool as root if
 * it is too small; what was added is given back by guest_fini(). A guest
 * populating its pages meanwhile can skew one reading, hence the retries. */
static int hugetlb_pool(struct guest *g, uint64_t need, uint64_t page)
{
	uint64_t first = meminfo_kb("HugePages_Total"), total = first, spare = 0;
	const char *why = "the kernel found too little memory";
	int rc = 0, tries;

	if (first == UINT64_MAX)
		return -ENOSYS;
	for (tries = 0; tries < 3; tries++) {
		spare = hugetlb_spare();
		if (spare >= need)
			break;
		/* The kernel would take what it can and starve the host. */
		if ((need - spare) * page > mem_available()) {
			why = "that is more than the host has available";
			break;
		}
		rc = nr_hugepages_set(total + need - spare);
		total = meminfo_kb("HugePages_Total");
		if (rc || total == UINT64_MAX) {
			why = rc ? strerror(-rc) : "cannot read /proc/meminfo";
			break;
		}
	}
	if (total != UINT64_MAX && total > first)
		g->huge_added = total - first;
	if (spare >= need)
		return 0;
	fprintf(stderr,
		"ferry-vm: hugetlb: need %llu free huge pages, %llu spare, and "
		"growing the pool (/proc/sys/vm/nr_hugepages) failed: %s\n",
		(unsigned long long)need, (unsigned long long)spare, why);
	return rc ? rc : -ENOMEM;
}

/* Serialises ferry-vm processes that size the huge page pool and reserve
 * from it, so two guests starting together cannot both count the same
 * spare pages. Returns an fd to close, or -1 (then unserialised). */
static int hugetlb_lock(void)
{
	int fd = open("/tmp/ferry-vm-hugetlb.lock", O_RDWR | O_CREAT | O_CLOEXEC,
		      0600);

	if (fd >= 0 && flock(fd, LOCK_EX) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* hugetlb: a memfd of 2 MiB pages from the hugetlb pool. */
static int ram_hugetlb(struct guest *g)
{
	uint64_t kb = meminfo_kb("Hugepagesize");
	int lock, rc;

	if (kb == UINT64_MAX || !kb)
		return -ENOSYS;
	if (g->mem_size % (kb << 10)) {
		fprintf(stderr, "ferry-vm: hugetlb: --memory must be a multiple of %llu KiB\n",
			(unsigned long long)kb);
		return -EINVAL;
	}
	if (ram_by_fd)
		return ram_memfd(g, MFD_HUGETLB);
	lock = hugetlb_lock();
	rc = hugetlb_pool(g, g->mem_size / (kb << 10), kb << 10);
	if (!rc)
		rc = ram_memfd(g, MFD_HUGETLB);
	if (lock >= 0)
		close(lock);
	return rc;
}

/* Give back the huge pages this guest added to the pool (after its RAM is
 * unmapped and its memfd closed). Pages other guests hold or reserved are
 * never freed by the kernel, whatever we write. */
/**
 * guest_ram_unpool() - give back the huge pages this guest added to the
 * pool (after its RAM is unmapped).
 */
void guest_ram_unpool(struct guest *g)
{
	uint64_t total;
	int lock;

	if (!g->huge_added)
		return;
	lock = hugetlb_lock();
	total = meminfo_kb("HugePages_Total");
	if (total != UINT64_MAX)
		(void)nr_hugepages_set(total > g->huge_added ? total - g->huge_added : 0);
	if (lock >= 0)
		close(lock);
	g->huge_added = 0;
}

/**
 * guest_ram_map() - create guest RAM of g->backend, without touching it:
 * anonymous and memfd pages are allocated when first touched (or by
 * guest_ram_populate()), hugetlb pages are reserved here.
 * @g: the guest; mem_size, npages and backend set.
 *
 * Return: 0, or a negative errno (-ENOMEM when the host has too little).
 */
int guest_ram_map(struct guest *g)
{
	/* RAM is populated later: asking for more than the host has would
	 * wake the OOM killer then instead of failing now. (The hugetlb pool
	 * is sized and reserved up front instead.) */
	if (g->backend != VM_MEM_HUGETLB && g->mem_size > mem_available())
		return -ENOMEM;
	return g->backend == VM_MEM_ANON    ? ram_anon(g) :
	       g->backend == VM_MEM_HUGETLB ? ram_hugetlb(g) :
					      ram_memfd(g, 0);
}

/**
 * guest_ram_populate() - allocate and touch every page of guest RAM, a
 * slice at a time, counting the bytes done in g->populated.
 * @g: the guest, its RAM mapped.
 * @abort: stop early when it becomes true (the process is exiting).
 *
 * Population never changes what RAM holds (MADV_POPULATE_WRITE leaves
 * present pages as they are, and the fallback adds 0 atomically), so a
 * migration may receive into RAM meanwhile.
 *
 * Return: 0, -ECANCELED when aborted, or a negative errno (-ENOMEM when
 * the host ran out of memory).
 */
int guest_ram_populate(struct guest *g, const atomic_bool *abort)
{
	uint64_t off, len, pg;

	/* Take every first-touch cost now (shmem allocation, and on this
	 * virtualised machine the host's own faults) rather than inside a
	 * migration's downtime, where the digest reads all of RAM. */
	for (off = 0; off < g->mem_size; off += len) {
		if (atomic_load(abort))
			return -ECANCELED;
		len = g->mem_size - off < POPULATE_SLICE ? g->mem_size - off :
							   POPULATE_SLICE;
		if (madvise(g->ram + off, len, MADV_POPULATE_WRITE) < 0) {
			if (errno != EINVAL)
				return -errno; /* out of memory: say so, do not fault */
			/* A kernel before 5.14: write-touch each page with
			 * an atomic add of 0, which cannot undo a store
			 * that races with it. */
			for (pg = off; pg < off + len; pg += VM_PAGE_SIZE)
				__atomic_fetch_add(&g->ram[pg], 0, __ATOMIC_RELAXED);
		}
		atomic_store(&g->populated, off + len);
	}
	return 0;
}

/**
 * guest_ram_region() - guest RAM as one region for the engine: its memfd
 * with FERRY_REGION_FD when it has one (memfd and hugetlb), so that a
 * local migration can pass it; anonymous RAM has none.
 * @g: the guest.
 * @r: receives the region.
 */
void guest_ram_region(const struct guest *g, struct ferry_region *r)
{
	memset(r, 0, sizeof(*r));
	r->gpa = 0;
	r->size = g->mem_size;
	r->host = g->ram;
	r->fd = g->memfd;
	r->fd_offset = 0;
	r->name = "ram0";
	r->flags = g->memfd >= 0 ? FERRY_REGION_FD : 0;
}

/**
 * guest_ram_release() - a local migration completed: the destination maps
 * these very pages and runs the guest. Replace the mapping with an
 * inaccessible one of the same size (nothing else can be mapped there,
 * and a stray touch faults instead of writing into the running guest) and
 * close the memfd, so this process holds no reference to the guest's
 * memory.
 * @g: the guest, its vCPUs parked for good.
 */
void guest_ram_release(struct guest *g)
{
	if (!g->ram)
		return;
	if (mmap(g->ram, g->mem_size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
		 0) == MAP_FAILED)
		fprintf(stderr, "ferry-vm: cannot unmap the guest RAM handed over: %s\n",
			strerror(errno));
	if (g->memfd >= 0)
		close(g->memfd);
	g->memfd = -1;
	atomic_store(&g->ram_released, true);
	fprintf(stderr, "ferry-vm: guest RAM unmapped: the destination owns it\n");
}

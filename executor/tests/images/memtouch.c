/*
 * memtouch: a checkpoint/restore benchmark workload for loadshift.
 *
 * Usage: memtouch [MIB]   (default 64)
 *
 * Allocates MIB mebibytes with mmap, writes to every page so that all of it
 * is resident (and so part of the process image CRIU must dump), then prints
 * a counter every 100 ms forever. After a restore the counter continues from
 * where it was, which is how a test tells a restore from a fresh start.
 *
 * Built with `gcc -static -O2` by scripts/setup-docker into the test image
 * loadshift/counter:test as /bin/memtouch: the image has no libc.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	unsigned long mib = 64;
	if (argc > 1) {
		char *end;
		errno = 0;
		mib = strtoul(argv[1], &end, 10);
		if (errno != 0 || *end != '\0' || end == argv[1]) {
			fprintf(stderr, "usage: memtouch [MIB]\n");
			return 2;
		}
	}

	size_t len = mib << 20;
	unsigned char *mem = NULL;
	if (len > 0) {
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			fprintf(stderr, "memtouch: mmap %lu MiB: %s\n", mib,
				strerror(errno));
			return 1;
		}
	}
	long page = sysconf(_SC_PAGESIZE);
	/* Distinct bytes per page: zero pages could be deduplicated or skipped. */
	for (size_t off = 0; off < len; off += (size_t)page)
		mem[off] = (unsigned char)(off / (size_t)page) | 1;

	printf("memtouch: %lu MiB resident\n", mib);
	fflush(stdout);

	const struct timespec tick = { 0, 100 * 1000 * 1000 };
	for (unsigned long i = 0;; i++) {
		/* Keep dirtying pages, as a real workload would. */
		if (len > 0)
			mem[(i * (size_t)page) % len]++;
		printf("%lu\n", i);
		fflush(stdout);
		nanosleep(&tick, NULL);
	}
}

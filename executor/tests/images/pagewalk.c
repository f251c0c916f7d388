/*
 * pagewalk: the post-copy benchmark's workload.
 *
 * Usage: pagewalk MIB
 *
 * Writes to every page of MIB mebibytes (all resident, all distinct), prints
 * "ready", then walks its memory forever, writing one byte per page, at most
 * 256 pages per millisecond (so it does not eat a whole core), and every
 * 5 ms prints "<unix time in ms> <pages walked so far>". Its own progress
 * per second tells how much a migration slows it (post-copy: while pages
 * are still arriving, a write to one that has not arrived waits for it), and
 * the largest gap between two lines is how long it was frozen.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	char *end;
	unsigned long mib;
	if (argc != 2) {
		fprintf(stderr, "usage: pagewalk MIB\n");
		return 2;
	}
	errno = 0;
	mib = strtoul(argv[1], &end, 10);
	if (errno != 0 || *end != '\0' || end == argv[1] || mib == 0) {
		fprintf(stderr, "usage: pagewalk MIB (a positive number)\n");
		return 2;
	}
	size_t len = mib << 20;
	unsigned char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "pagewalk: mmap %lu MiB: %s\n", mib, strerror(errno));
		return 1;
	}
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = len / page;
	for (size_t i = 0; i < pages; i++)
		mem[i * page] = (unsigned char)i | 1;
	printf("ready\n");
	fflush(stdout);

	const struct timespec tick = { 0, 1000 * 1000 };
	unsigned long long walked = 0;
	long long last = now_ms();
	for (;;) {
		for (int k = 0; k < 256; k++, walked++)
			mem[(walked % pages) * page]++;
		nanosleep(&tick, NULL);
		long long t = now_ms();
		if (t - last >= 5) {
			printf("%lld %llu\n", t, walked);
			fflush(stdout);
			last = t;
		}
	}
}

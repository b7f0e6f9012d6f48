// mmio-bench ADDRESS COUNT: reads a 32-bit device register COUNT times through /dev/mem and
// prints the rate, for measuring the cost of one MMIO round trip to a bridged peripheral.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s ADDRESS COUNT\n", argv[0]);
		return 2;
	}
	unsigned long address = strtoul(argv[1], NULL, 0);
	long count = strtol(argv[2], NULL, 0);
	int fd = open("/dev/mem", O_RDWR | O_SYNC);
	if (fd < 0) {
		perror("/dev/mem");
		return 1;
	}
	long page = sysconf(_SC_PAGESIZE);
	volatile uint8_t *base = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, address & ~(page - 1));
	if (base == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	volatile uint32_t *reg = (volatile uint32_t *)(base + (address & (page - 1)));
	struct timespec t0, t1;
	uint32_t sink = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < count; i++)
		sink ^= *reg;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("reads=%ld seconds=%.6f per_second=%.0f usecs_each=%.2f value=%#x\n", count, seconds,
	       count / seconds, seconds * 1e6 / count, sink & 0);
	return 0;
}

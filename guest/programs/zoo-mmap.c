/* The cache zoo's zero-copy case from user space: the driver's page mapped into this process,
 * filled here, then sent by the device.  usage: zoo-mmap buggy|fixed
 * (cosim_cache_zoo.c: a streaming page mapped cacheable is the bug, dma_mmap_coherent the fix) */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ZOO "/sys/kernel/debug/cosim-cache-zoo/"
#define PAGE 4096

static int command(const char *text)
{
	int fd = open(ZOO "control", O_WRONLY);
	int ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);

	if (fd >= 0)
		close(fd);
	if (!ok)
		perror(text);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	char prepare[64], result[256];
	unsigned char *page;
	ssize_t n;
	int fd;

	if (argc != 2 || (strcmp(argv[1], "buggy") && strcmp(argv[1], "fixed"))) {
		fprintf(stderr, "usage: %s buggy|fixed\n", argv[0]);
		return 2;
	}
	snprintf(prepare, sizeof(prepare), "mmap-prepare %s", argv[1]);
	if (command(prepare))
		return 1;
	fd = open(ZOO "buffer", O_RDWR);
	page = fd < 0 ? MAP_FAILED : mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (page == MAP_FAILED) {
		perror(ZOO "buffer");
		return 1;
	}
	for (int i = 0; i < PAGE; i++)
		page[i] = 9 + i * 7; /* the pattern the driver checks */
	if (command("mmap-send"))
		return 1;
	fd = open(ZOO "control", O_RDONLY);
	n = fd < 0 ? -1 : read(fd, result, sizeof(result) - 1);
	if (n < 0) {
		perror(ZOO "control");
		return 1;
	}
	result[n] = '\0';
	fputs(result, stdout);
	return 0;
}

/* acme-dma-test LEN...: asks acme_dma for one verified DMA copy of each length. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int fd = open("/dev/acme-dma", O_WRONLY);
	int failed = 0;

	if (fd < 0) {
		perror("acme-dma-test: /dev/acme-dma");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (write(fd, argv[i], strlen(argv[i])) < 0) {
			printf("acme-dma-test: %s bytes: %s\n", argv[i], strerror(errno));
			failed++;
		}
	}
	printf("acme-dma-test: %d copies verified, %d failed\n", argc - 1 - failed, failed);
	close(fd);
	return failed ? 1 : 0;
}

/* Erases an MTD device, or part of it, through the MEMERASE ioctl (busybox has no flash_erase).
 * usage: mtd-erase /dev/mtdN [OFFSET LENGTH]    (whole device without OFFSET/LENGTH) */
#include <fcntl.h>
#include <mtd/mtd-user.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct mtd_info_user info;
	struct erase_info_user erase;
	int fd;

	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: %s /dev/mtdN [OFFSET LENGTH]\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	if (fd < 0 || ioctl(fd, MEMGETINFO, &info) < 0) {
		perror(argv[1]);
		return 1;
	}
	erase.start = argc == 4 ? strtoul(argv[2], NULL, 0) : 0;
	erase.length = argc == 4 ? strtoul(argv[3], NULL, 0) : info.size;
	if (erase.start % info.erasesize || erase.length % info.erasesize) {
		fprintf(stderr, "%s: offset and length must be multiples of the erase size %u\n",
			argv[1], info.erasesize);
		return 2;
	}
	if (ioctl(fd, MEMERASE, &erase) < 0) {
		perror("MEMERASE");
		return 1;
	}
	printf("erased %u bytes at %#x of %s (erase size %u)\n", erase.length, erase.start, argv[1],
	       info.erasesize);
	return 0;
}

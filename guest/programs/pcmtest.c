/* A small ALSA player and recorder on the kernel's PCM ioctls (no alsa-lib in the guest).
 *
 *   pcmtest play   DEVICE RATE FREQ FRAMES [STALL_AT STALL_MS]
 *       plays a sine of FREQ Hz, 16-bit stereo: left = round(12000 sin(2 pi FREQ n / RATE)),
 *       right = -left; with STALL_AT, stops feeding for STALL_MS once FRAMES reaches STALL_AT
 *       (provoking an underrun) and recovers as applications do (prepare, go on).
 *   pcmtest record DEVICE RATE FRAMES FILE [STALL_AT STALL_MS]
 *       records FRAMES 16-bit stereo frames into FILE; with STALL_AT, stops reading for STALL_MS
 *       there (provoking an overrun).
 *
 * Period 512 frames (10.7 ms at 48 kHz), 4 periods per buffer: an ordinary ring, as a desktop
 * player sets up; under virtual time the host's speed never shows in the guest's, so it needs no
 * margin for an emulator.  Prints the frames moved and the xruns seen. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <sound/asound.h>

#define PERIOD 512
#define PERIODS 4
#define CHANNELS 2

static struct snd_mask *mask(struct snd_pcm_hw_params *p, int param)
{
	return &p->masks[param - SNDRV_PCM_HW_PARAM_FIRST_MASK];
}

static struct snd_interval *interval(struct snd_pcm_hw_params *p, int param)
{
	return &p->intervals[param - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
}

static void set_mask(struct snd_pcm_hw_params *p, int param, unsigned int bit)
{
	struct snd_mask *m = mask(p, param);

	memset(m, 0, sizeof(*m));
	m->bits[bit / 32] = 1u << (bit % 32);
}

static void set_interval(struct snd_pcm_hw_params *p, int param, unsigned int value)
{
	struct snd_interval *i = interval(p, param);

	i->min = i->max = value;
	i->integer = 1;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int open_pcm(const char *device, unsigned int rate, int capture)
{
	struct snd_pcm_hw_params hw;
	struct snd_pcm_sw_params sw;
	int fd = open(device, O_RDWR);
	int n;

	if (fd < 0)
		die(device);
	memset(&hw, 0, sizeof(hw));
	for (n = SNDRV_PCM_HW_PARAM_FIRST_MASK; n <= SNDRV_PCM_HW_PARAM_LAST_MASK; n++)
		memset(mask(&hw, n), 0xff, sizeof(struct snd_mask));
	for (n = SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; n <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL; n++)
		interval(&hw, n)->max = ~0u;
	set_mask(&hw, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
	set_mask(&hw, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
	set_mask(&hw, SNDRV_PCM_HW_PARAM_SUBFORMAT, SNDRV_PCM_SUBFORMAT_STD);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_CHANNELS, CHANNELS);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_RATE, rate);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, PERIOD);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_PERIODS, PERIODS);
	hw.rmask = ~0u;
	hw.info = ~0u;
	if (ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &hw) < 0)
		die("SNDRV_PCM_IOCTL_HW_PARAMS");

	memset(&sw, 0, sizeof(sw));
	sw.period_step = 1;
	sw.avail_min = PERIOD;
	sw.start_threshold = capture ? 1 : PERIOD * PERIODS;
	sw.stop_threshold = PERIOD * PERIODS;
	sw.boundary = PERIOD * PERIODS;
	while (sw.boundary * 2 <= 0x7fffffffUL - PERIOD * PERIODS)
		sw.boundary *= 2;
	if (ioctl(fd, SNDRV_PCM_IOCTL_SW_PARAMS, &sw) < 0)
		die("SNDRV_PCM_IOCTL_SW_PARAMS");
	if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0)
		die("SNDRV_PCM_IOCTL_PREPARE");
	return fd;
}

/* Moves n frames; on an xrun, counts it, prepares the stream again and goes on. */
static void transfer(int fd, int16_t *buf, unsigned long n, int capture, unsigned int *xruns)
{
	while (n) {
		struct snd_xferi x = { .buf = buf, .frames = n };

		if (ioctl(fd, capture ? SNDRV_PCM_IOCTL_READI_FRAMES : SNDRV_PCM_IOCTL_WRITEI_FRAMES,
			  &x) < 0) {
			if (errno != EPIPE)
				die(capture ? "SNDRV_PCM_IOCTL_READI_FRAMES" : "SNDRV_PCM_IOCTL_WRITEI_FRAMES");
			printf("xrun: %s\n", capture ? "overrun" : "underrun");
			(*xruns)++;
			if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0)
				die("SNDRV_PCM_IOCTL_PREPARE");
			continue;
		}
		buf += x.result * CHANNELS;
		n -= x.result;
	}
}

static void stall(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int play(int argc, char **argv)
{
	unsigned int rate = atoi(argv[2]), freq = atoi(argv[3]), xruns = 0;
	unsigned long frames = strtoul(argv[4], NULL, 0), stall_at = ~0ul, done = 0, i;
	unsigned int stall_ms = 0;
	int16_t chunk[PERIOD * CHANNELS];
	int fd = open_pcm(argv[1], rate, 0);

	if (argc == 7) {
		stall_at = strtoul(argv[5], NULL, 0);
		stall_ms = atoi(argv[6]);
	}
	while (done < frames) {
		unsigned long n = frames - done < PERIOD ? frames - done : PERIOD;

		if (done >= stall_at) {
			stall(stall_ms);
			stall_at = ~0ul;
		}
		for (i = 0; i < n; i++) {
			int16_t s = (int16_t)lrint(12000.0 * sin(2.0 * M_PI * freq * (done + i) / rate));

			chunk[2 * i] = s;
			chunk[2 * i + 1] = -s;
		}
		transfer(fd, chunk, n, 0, &xruns);
		done += n;
	}
	if (ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) < 0)
		die("SNDRV_PCM_IOCTL_DRAIN");
	printf("played %lu frames at %u Hz, xruns %u\n", done, rate, xruns);
	close(fd);
	return 0;
}

static int record(int argc, char **argv)
{
	unsigned int rate = atoi(argv[2]), xruns = 0;
	unsigned long frames = strtoul(argv[3], NULL, 0), first = frames;
	int16_t *buf = calloc(frames, CHANNELS * sizeof(int16_t));
	int fd = open_pcm(argv[1], rate, 1);
	FILE *out = fopen(argv[4], "wb");

	if (!buf || !out)
		die("record");
	if (argc == 7 && strtoul(argv[5], NULL, 0) < frames)
		first = strtoul(argv[5], NULL, 0);
	transfer(fd, buf, first, 1, &xruns);
	if (first < frames) {
		stall(atoi(argv[6]));
		transfer(fd, buf + first * CHANNELS, frames - first, 1, &xruns);
	}
	if (fwrite(buf, CHANNELS * sizeof(int16_t), frames, out) != frames)
		die(argv[4]);
	fclose(out);
	printf("recorded %lu frames at %u Hz, xruns %u\n", frames, rate, xruns);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 6 && !strcmp(argv[1], "play") && (argc == 6 || argc == 8))
		return play(argc - 1, argv + 1);
	if (argc >= 6 && !strcmp(argv[1], "record") && (argc == 6 || argc == 8))
		return record(argc - 1, argv + 1);
	fprintf(stderr, "usage: pcmtest play DEVICE RATE FREQ FRAMES [STALL_AT STALL_MS]\n"
			"       pcmtest record DEVICE RATE FRAMES FILE [STALL_AT STALL_MS]\n");
	return 2;
}

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What cosim's guest drivers share: a debugfs "control" file taking one-line commands, and a
 * platform driver registered together with the debugfs folder its devices live in.
 */
#ifndef COSIM_CONTROL_H
#define COSIM_CONTROL_H

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/string.h>
#include <linux/uaccess.h>

/* Copies a command written to a control file into buf as a string; -EINVAL if too long. */
static inline int cosim_copy_command(char *buf, size_t size, const char __user *ubuf, size_t count)
{
	if (count >= size)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	return 0;
}

/* A control file's read: the driver's last result line, taken under its lock. */
static inline ssize_t cosim_read_result(struct mutex *lock, const char *result, char __user *ubuf,
					size_t count, loff_t *ppos)
{
	ssize_t ret;

	mutex_lock(lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, result, strlen(result));
	mutex_unlock(lock);
	return ret;
}

/* module_init/module_exit for a platform driver whose devices add files under /sys/kernel/debug/DIR */
#define module_cosim_platform_driver(driver, dir, root)				\
static int __init driver##_init(void)						\
{										\
	int ret;								\
										\
	root = debugfs_create_dir(dir, NULL);					\
	ret = platform_driver_register(&driver);				\
	if (ret)								\
		debugfs_remove_recursive(root);					\
	return ret;								\
}										\
module_init(driver##_init);							\
static void __exit driver##_exit(void)						\
{										\
	platform_driver_unregister(&driver);					\
	debugfs_remove_recursive(root);						\
}										\
module_exit(driver##_exit)

#endif

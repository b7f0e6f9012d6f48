"""A worked example of a cosim model in a package of its own: the ARM PL031 real-time clock."""

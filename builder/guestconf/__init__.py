"""Guest config formats: LXC, Xen xm/xl."""

"""Image servers: `imgbuild publish` lays out built outputs as a static tree any HTTPS server can serve.

- source.py: a built output, read as untrusted (its SHA256SUMS checked first, its manifest's shape checked)
- lxcdownload.py: what LXC's download template fetches (meta/1.0/index-system, rootfs.tar.xz, meta.tar.xz)
- streams.py: the simplestreams index LXD and Incus read (streams/v1/index.json, images.json)
- publish.py: the tree: one directory per image and serial, SHA256SUMS (signed) in each, old serials pruned
"""

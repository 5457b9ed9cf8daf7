"""A guest's identity (host name, addresses, MACs): rewriting it in the guest's own files and in its guest configs
when a guest is cloned or re-identified (builder.identity.formats), and reading it back from guest configs for
inventories and duplicate checks."""

"""The RPM side of the package world: yum/dnf repository metadata (repodata) and dependency resolution.

repodata reads a repository's repomd.xml, primary and comps (cached by checksum); resolve picks the closure of
packages a recipe asks for, the way yum's depsolver would for a first install into an empty root.
"""

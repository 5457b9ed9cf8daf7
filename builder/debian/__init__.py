"""The Debian package world: the mirror's signed index, package cache, resolver, local repo."""

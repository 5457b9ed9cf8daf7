"""The migrate tests' hosts: real sshd in network namespaces (tests/sshhost.py)."""
from tests.sshhost import sshhost, two_sshhosts  # noqa: F401  (fixtures for every test here)

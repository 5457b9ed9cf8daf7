"""The migrate tests' hosts: real sshd in network namespaces (tests/support/sshhost.py)."""
from tests.support.sshhost import sshhost, two_sshhosts  # noqa: F401  (fixtures for every test here)

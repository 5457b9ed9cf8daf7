"""imgbuild: build root filesystems, guest configs and images from YAML recipes; migrate OS trees and guests."""

__version__ = "0.1.0"

"""`hushlight keygen`: make the city's release key for firmware updates over the air.

Writes two files into ``--out DIR``:

- `release-key.pem`: the private key (RSA, PKCS#8 PEM, readable by its owner
  only).  `hushlight release` signs with it.  Keep it off the sensors and off
  shared disks: whoever holds it can make every sensor of the city run their
  code.
- `release.pub`: the public key in the sensors' format (protocol.ota).
  `hushlight provision --release-key` and `hushlight flash --release-key`
  put it on each sensor, which then takes only releases signed with the
  private key.

An existing key is never overwritten: the sensors in the field trust it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import release

HELP = "make the release key that signs firmware updates (private key + the sensors' release.pub)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"folder for {release.KEY_NAME} and {release.PUB_NAME} (created if missing)",
    )
    parser.add_argument(
        "--bits",
        type=int,
        default=release.DEFAULT_BITS,
        choices=release.KEY_BITS,
        help=f"RSA key size (default {release.DEFAULT_BITS})",
    )


def run(args: argparse.Namespace) -> int:
    private, public = release.generate_key(args.out, args.bits)
    print(f"made an RSA {args.bits} release key")
    print(f"private key: {private} (mode 0600; keep it off the sensors and off shared disks)")
    print(f"public key:  {public} (give it to `hushlight provision/flash --release-key`)")
    print(
        f"next: `hushlight release --key {private} --version X.Y.Z --esp32 --out DIR` "
        "builds and signs a release"
    )
    return 0

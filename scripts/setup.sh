#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the benchmarks need, if any is missing.
set -euo pipefail

packages=(
  pkg-config            # system-library targets resolve through pkg-config
  g++                   # libstdc++ headers: TOMLKit compiles toml++ (C++17)
  libsqlite3-dev        # catalog
  libsystemd-dev        # sd_notify, socket activation
  zlib1g-dev            # gzip layers
  libzstd-dev           # zstd chunks and layers
  zstd                  # zstd CLI: the builder tests write zstd layer tars with it
  liblz4-dev            # lz4_block chunks (nydus)
  libcurl4-openssl-dev  # registry client
  libssl-dev            # libcrypto: SHA-256 on the hot path
  docker-registry       # the real OCI registry the tests pull from and push to
  skopeo                # independent OCI client (tests push with it)
  openssl               # self-signed CA for the TLS registry tests
  apache2-utils         # htpasswd for the basic-auth registry tests
  python3               # fault-injecting proxy and token issuer in the registry tests
  erofs-utils           # mkfs.erofs, dump.erofs, fsck.erofs: independent checks of images (tests)
  attr                  # setfattr for xattr test trees
  systemd               # systemd-analyze verify, systemd-socket-activate (tests)
  curl                  # curl --unix-socket in docs and benchmarks
  qemu-system-x86       # boots the 6.12 test kernel (cachefiles on-demand) under TCG: scripts/vm-test
  e2fsprogs             # mkfs.ext4: the VM's cache disk, and the small disk the disk-full tests fill
  iproute2              # ip, tc: the guest's loopback; the WAN link emulator's namespaces, veth pairs and tbf
  util-linux            # fallocate (punching holes in the engine tests, filling the disk-full tests' disk)
  mount                 # mount(8) -o loop: the disk-full tests' small ext4
  sqlite3               # inspecting the catalog by hand
  containerd            # the real containerd 1.6 the proxy-plugin tests drive (ctr, proxy_plugins)
  runc                  # runtime for `ctr run` in those tests
  busybox-static        # a static busybox: the rootfs of the test images
  umoci                 # OCI layouts as umoci writes them: the converter's ecosystem tests
  libarchive-tools      # bsdtar: layers as libarchive writes them (converter tests)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

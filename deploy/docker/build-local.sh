#!/usr/bin/env bash
# Builds the images of deploy/docker/Dockerfile where no container registry can be reached (as on the project's
# development machines): the base images are made from Debian packages (debootstrap) plus this machine's .NET, then
# the real Dockerfile is built with them as its SDK_IMAGE and RUNTIME_IMAGE, the NuGet cache mounted. Also a redis
# and Prometheus image (Debian's packages) for compose/dev. Needs root, podman and debootstrap (apt-get install -y podman debootstrap runc).
# Usage: deploy/docker/build-local.sh [targets...]   (default: gateway node; node-cuda and standalone also exist)
# Env:   WORK (/tmp/serving-images) TAG (0.1.0) MIRROR (http://deb.debian.org/debian)
#        PODMAN: how to call podman. The default works around what the sandboxed VMs here lack (no CAP_SYS_RESOURCE:
#        lower ulimits; hybrid cgroups that crun refuses: runc with cgroupfs); on a normal host plain "podman" is enough.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-/tmp/serving-images}
TAG=${TAG:-0.1.0}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PODMAN=${PODMAN:-"podman --runtime runc --cgroup-manager=cgroupfs"}
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(gateway node)
DOTNET_ROOT=$(dirname "$(readlink -f "$(command -v dotnet)")")
mkdir -p "$WORK"

if [ ! -d "$WORK/rootfs" ]; then
  # runtime-deps of .NET on Debian 12: glibc, libstdc++, OpenSSL, zlib, CA certificates, time zones.
  debootstrap --variant=minbase --include=ca-certificates,libssl3,libstdc++6,zlib1g,tzdata bookworm "$WORK/rootfs.tmp" "$MIRROR"
  rm -rf "$WORK/rootfs.tmp/var/cache/apt/archives/"*.deb "$WORK/rootfs.tmp/var/lib/apt/lists/"*
  mv "$WORK/rootfs.tmp" "$WORK/rootfs"
fi

image_from() { # name, folder, [--change "ENV ..."]...
  local name=$1 dir=$2
  shift 2
  tar -C "$dir" -c . | $PODMAN import "$@" - "$name" >/dev/null
  echo "built $name"
}

if ! $PODMAN image exists localhost/serving-sdk:10.0; then
  # Runtime base: Debian + the .NET and ASP.NET Core shared runtimes (what mcr's aspnet image holds).
  rm -rf "$WORK/runtime" && cp -a "$WORK/rootfs" "$WORK/runtime"
  mkdir -p "$WORK/runtime/usr/share/dotnet"
  cp -a "$DOTNET_ROOT/dotnet" "$DOTNET_ROOT/host" "$DOTNET_ROOT/shared" "$DOTNET_ROOT/LICENSE.txt" "$WORK/runtime/usr/share/dotnet/"
  ln -sf /usr/share/dotnet/dotnet "$WORK/runtime/usr/bin/dotnet"
  image_from "localhost/serving-runtime:10.0" "$WORK/runtime"
  # SDK base: the same plus the SDK (what mcr's sdk image holds; without its ICU, so the SDK runs invariant).
  cp -a "$DOTNET_ROOT/sdk" "$DOTNET_ROOT/sdk-manifests" "$DOTNET_ROOT/packs" "$DOTNET_ROOT/templates" "$WORK/runtime/usr/share/dotnet/"
  # The restore inside the build reaches NuGet the way this machine does: with this machine's trusted CAs (an egress proxy
  # that inspects TLS has its own CA here). Only the SDK image gets them; the runtime images keep Debian's.
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/runtime/etc/ssl/certs/ca-certificates.crt"
  image_from "localhost/serving-sdk:10.0" "$WORK/runtime" --change "ENV DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1" \
    --change "ENV DOTNET_CLI_TELEMETRY_OPTOUT=1" --change "ENV DOTNET_NOLOGO=1"
  rm -rf "$WORK/runtime"
fi

# Images of Debian packages for compose and the dev overlay (Grafana is not packaged by Debian: not built here).
debian_image() { # name, packages, [--change ...]...
  local name=$1 packages=$2
  shift 2
  if $PODMAN image exists "$name"; then return; fi
  rm -rf "$WORK/pkg" && cp -a "$WORK/rootfs" "$WORK/pkg"
  cp /etc/resolv.conf "$WORK/pkg/etc/resolv.conf"
  chroot "$WORK/pkg" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null && rm -rf /var/lib/apt/lists/*"
  image_from "$name" "$WORK/pkg" "$@"
  rm -rf "$WORK/pkg"
}
debian_image "localhost/serving-redis:$TAG" redis-server --change 'CMD ["redis-server", "--save", "", "--appendonly", "no"]'
debian_image "localhost/serving-prometheus:$TAG" prometheus \
  --change 'CMD ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus"]'

for target in "${TARGETS[@]}"; do
  # Docker format: OCI images cannot carry HEALTHCHECK.
  $PODMAN build --format docker "${ULIMITS[@]}" --network host -v "$HOME/.nuget/packages:/root/.nuget/packages" \
    --build-arg SDK_IMAGE=localhost/serving-sdk:10.0 --build-arg RUNTIME_IMAGE=localhost/serving-runtime:10.0 \
    -f deploy/docker/Dockerfile --target "$target" -t "localhost/serving-$target:$TAG" .
done
$PODMAN images --filter reference='localhost/serving-*'

#!/usr/bin/env bash
# Build the model-server and operator images with buildah (no Docker engine needed) and write
# them as OCI archives, which ../shared/k8s/node/load.sh imports into the test node.
#
#   scripts/build-images.sh        # or `make images`; prints "IMAGE ARCHIVE", one line each
#
# Nothing is pulled from or pushed to a registry, and no model is downloaded:
# - BASE_IMAGE: a local stand-in for python:3.11-slim; unset, ../shared/k8s/node/base-image.sh
#   builds (once) localhost/kubeclassify-base:bookworm.
# - WEIGHTS_SOURCE: the ResNet50 weights to bake; unset, a seeded random ResNet50 made here
#   in the official file's layout (weights/resnet50_seeded.h5, gitignored): real shapes and
#   speed, random answers. Point it at weights/resnet50_weights_tf_dim_ordering_tf_kernels.h5
#   for the real ones.
# - SERVER_IMAGE (localhost/kubeclassify/modelserver:dev: the default, OpenVINO-only image),
#   TENSORFLOW_IMAGE (localhost/kubeclassify/modelserver:dev-tensorflow: Dockerfile.server's
#   `tensorflow` target), OPERATOR_IMAGE (localhost/kubeclassify/operator:dev), IMAGES_DIR
#   (build/images).
# Layers are cached (--layers), so a rebuild with nothing changed takes seconds, and an archive
# is written again only when its image id changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${KUBECLASSIFY_SHARED:-../shared}
SERVER_IMAGE=${SERVER_IMAGE:-localhost/kubeclassify/modelserver:dev}
TENSORFLOW_IMAGE=${TENSORFLOW_IMAGE:-localhost/kubeclassify/modelserver:dev-tensorflow}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-localhost/kubeclassify/operator:dev}
IMAGES_DIR=${IMAGES_DIR:-build/images}
PYTHON=${PYTHON:-.venv/bin/python}
log() { echo "[build-images] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -z ${BASE_IMAGE:-} ]]; then
  [[ -x $SHARED/k8s/node/base-image.sh ]] \
    || die "no BASE_IMAGE and no $SHARED/k8s/node/base-image.sh to build a local one"
  BASE_IMAGE=$("$SHARED/k8s/node/base-image.sh")
fi
command -v buildah >/dev/null || die "buildah not found (apt-get install buildah runc)"
RUNTIME=$(command -v runc) || die "runc not found (apt-get install runc)"
buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 \
  || die "base image $BASE_IMAGE is not in buildah's local storage (builds never pull)"

if [[ -z ${WEIGHTS_SOURCE:-} ]]; then
  WEIGHTS_SOURCE=weights/resnet50_seeded.h5
  if [[ ! -s $WEIGHTS_SOURCE ]]; then
    log "making seeded ResNet50 weights in $WEIGHTS_SOURCE"
    TF_CPP_MIN_LOG_LEVEL=2 "$PYTHON" - "$WEIGHTS_SOURCE" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "tests/support")
from seeded import write_seeded_resnet50_weights

target = Path(sys.argv[1])
partial = target.with_suffix(".partial")
write_seeded_resnet50_weights(partial, seed=16)
partial.rename(target)
EOF
  fi
fi
[[ $WEIGHTS_SOURCE == imagenet || $WEIGHTS_SOURCE == weights/* ]] \
  || die "WEIGHTS_SOURCE must be imagenet or a file under weights/ (the build context copies only that)"

build() { # Dockerfile image [buildah flag...]
  local file=$1 image=$2 start=$SECONDS; shift 2
  log "building $image from $file on $BASE_IMAGE"
  buildah build --layers --pull=never --runtime "$RUNTIME" --network host \
    --build-arg BASE_IMAGE="$BASE_IMAGE" "$@" -f "$file" -t "$image" . >&2
  log "$image built in $((SECONDS - start)) s"
}

archive() { # image name: $IMAGES_DIR/name.tar, skipped when the image id is the one archived
  local image=$1 tar=$IMAGES_DIR/$2.tar id start=$SECONDS
  id=$(buildah inspect --type image --format '{{.FromImageID}}' "$image")
  if [[ -s $tar && $(cat "$tar.id" 2>/dev/null) == "$id" ]]; then
    log "$tar is up to date (image ${id:0:12})"
  else
    rm -f "$tar" "$tar.id" "$tar.partial"
    buildah push --quiet "$image" "oci-archive:$tar.partial:$image" >&2
    mv "$tar.partial" "$tar" && echo "$id" > "$tar.id"
    log "$tar written in $((SECONDS - start)) s ($(du -h "$tar" | cut -f1))"
  fi
  echo "$image $tar"
}

mkdir -p "$IMAGES_DIR"
build Dockerfile.operator "$OPERATOR_IMAGE"
build Dockerfile.server "$SERVER_IMAGE" --build-arg "WEIGHTS_SOURCE=$WEIGHTS_SOURCE"
build Dockerfile.server "$TENSORFLOW_IMAGE" --build-arg "WEIGHTS_SOURCE=$WEIGHTS_SOURCE" \
  --target tensorflow
archive "$OPERATOR_IMAGE" operator
archive "$SERVER_IMAGE" modelserver
archive "$TENSORFLOW_IMAGE" modelserver-tensorflow

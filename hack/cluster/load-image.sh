#!/usr/bin/env bash
# load-image.sh NAME DOCKERFILE CONTEXT TAG: build an image (docker build, or without Docker from the
# same Dockerfile) and load it where the cluster's runtime finds it.
source "$(dirname "$0")/lib.sh"
name=$1 dockerfile=$2 context=$3 tag=$4
logfile=$CACHE_DIR/logs/image-$name.log
mkdir -p "$CACHE_DIR/logs"

backend=$(cat "$CLUSTER_DIR/backend" 2>/dev/null || echo local)
case $backend in
  kind)
    run "docker build $tag" "$logfile" docker build -f "$dockerfile" -t "$tag" "$context"
    run "kind load $tag" "$logfile" kind load docker-image "$tag" --name codetask
    ;;
  local)
    archive=$(python3 "$REPO_ROOT/hack/images/rootfs_image.py" "$context" --file "$dockerfile" --tag "$tag" 2>>"$logfile") \
      || die "build image $tag" "$logfile" "see also the build log next to the archive in $CACHE_DIR/images"
    run "import $tag" "$logfile" ctr_k8s images import "$archive"
    # Each source change makes a new archive (hundreds of MB): keep this image's newest three.
    ls -t "${archive%-*}"-*.tar | tail -n +4 | while read -r old; do rm -f "$old" "${old%.tar}.log"; done
    ;;
  external)
    log "external cluster: push $tag to a registry it can pull from (not done here)"
    ;;
esac

#!/usr/bin/env bash
# load-image.sh NAME DOCKERFILE CONTEXT TAG: build an image (docker build, or without Docker from the
# same Dockerfile) and load it where the cluster's runtime finds it (local: node 1's containerd, and
# node 2's when it runs).
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
    # Node 2 (node2.sh), when its runtime runs: the same archive into its containerd. A node 2 that is
    # down (killed by a test) gets the image copied from node 1 by `node2.sh restore` / `up`.
    if n2_runtime_up; then
      run "import $tag into node 2" "$logfile" ctr_n2 images import "$archive"
    elif [[ -d $N2_STATE ]]; then
      log "node 2 is down: $tag not loaded there now (node2.sh restore copies it from node 1)"
    fi
    # Each source change makes a new archive (hundreds of MB): keep this image's newest three.
    ls -t "${archive%-*}"-*.tar | tail -n +4 | while read -r old; do rm -f "$old" "${old%.tar}.log"; done
    ;;
  external)
    log "external cluster: push $tag to a registry it can pull from (not done here)"
    ;;
esac

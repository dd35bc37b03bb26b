#!/usr/bin/env bash
# Several cluster nodes on one machine: one GlusterFS volume mounted N times by
# independent FUSE clients. Each mount is its own lock owner and its own client cache,
# so processes using different mounts behave like processes on different nodes sharing
# one network filesystem (locks conflict across mounts, flock is emulated by POSIX
# locks as on NFS, renames are atomic, ESTALE shows up in rename races, killing a
# client is a node dying).
#
#   scripts/multinode.sh available                 exit 0 when a cluster can start here;
#                                                  else prints why and exits 3 (installs
#                                                  the Debian packages first when root)
#   scripts/multinode.sh up DIR [NODES] [--owner PID]
#                                                  starts glusterd, a volume and NODES
#                                                  (default 2) mounts DIR/mnt/n1..nN;
#                                                  with --owner, everything is torn down
#                                                  when process PID ends
#   scripts/multinode.sh mount DIR NAME [cached]   one more client mount, DIR/mnt/NAME;
#                                                  `cached`: of a second volume that
#                                                  keeps GlusterFS's default caches
#                                                  (and the kernel's default timeouts)
#   scripts/multinode.sh unmount DIR NAME          lazily unmounts it and ends its client
#   scripts/multinode.sh down DIR                  tears everything down (by pid)
#   scripts/multinode.sh run [NODES] -- COMMAND... up in a scratch folder, runs COMMAND
#                                                  with SPATIALZARR_NODES=mnt1:mnt2:...,
#                                                  then down, whatever happens
#
# One cluster runs at a time on a machine (glusterd has one fixed port): `up` waits for
# the previous one to be torn down. A keeper process (its log: DIR/keeper.log) owns the
# cluster and tears it down by pid on `down`, when the owner ends, or on SIGTERM/SIGINT;
# a later `up` first tears down what a killed keeper left.
set -euo pipefail

SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
REGISTRY=/run/spatialzarr-multinode
MACHINE_LOCK="$REGISTRY.lock"
PACKAGES=(glusterfs-server glusterfs-client)
# Client-side caches stay off: with them, another mount sees a renamed file's old
# version for about a second (docs/cluster.md).
CACHES=(stat-prefetch quick-read io-cache read-ahead write-behind open-behind readdir-ahead nl-cache)

die() {
    echo "multinode: $*" >&2
    exit 1
}

unavailable() {
    echo "multinode: $*" >&2
    exit 3
}

# Why no cluster can start here (empty when one can); installs the packages when root.
why_unavailable() {
    if [[ ! -c /dev/fuse ]]; then
        echo "/dev/fuse is missing (no FUSE in this kernel or container): GlusterFS clients cannot mount"
        return
    fi
    if ! command -v glusterd >/dev/null || ! command -v glusterfs >/dev/null; then
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
            echo "multinode: installing ${PACKAGES[*]}" >&2
            if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}"; } >&2; then
                echo "installing ${PACKAGES[*]} with apt-get failed"
                return
            fi
        else
            echo "the Debian packages ${PACKAGES[*]} are missing: install them as root (apt-get install ${PACKAGES[*]})"
            return
        fi
    fi
    if [[ $EUID -ne 0 ]]; then
        echo "glusterd and FUSE mounts need root (this runs as uid $EUID)"
        return
    fi
    if ! command -v flock >/dev/null; then
        echo "flock(1) from util-linux is missing"
        return
    fi
}

# Ends processes by pid: SIGTERM, then SIGKILL to those still there after 3 s.
end_pids() {
    local pid live=()
    for pid in "$@"; do
        [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && live+=("$pid")
    done
    for _ in $(seq 30); do
        local still=()
        for pid in "${live[@]}"; do
            kill -0 "$pid" 2>/dev/null && still+=("$pid")
        done
        [[ ${#still[@]} -gt 0 ]] || return 0
        live=("${still[@]}")
        sleep 0.1
    done
    for pid in "${live[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

pid_in() { [[ -s "$1" ]] && tr -dc '0-9' <"$1" || true; }

unmount_node() {
    local dir=$1 name=$2
    local mnt="$dir/mnt/$name" pidfile="$dir/run/$name.pid"
    if grep -qF " $mnt " /proc/self/mountinfo 2>/dev/null; then
        umount -l "$mnt" 2>/dev/null || true
    fi
    end_pids "$(pid_in "$pidfile")"
    rm -f "$pidfile"
}

# Tears down the cluster whose state is in DIR, by the pids recorded there.
teardown() {
    local dir=$1
    [[ -d "$dir/run" ]] || return 0
    local pidfile name pids=()
    for pidfile in "$dir"/run/*.pid; do
        [[ -e "$pidfile" ]] || continue
        name="$(basename "$pidfile" .pid)"
        case "$name" in
            glusterd | brick | brick-cached) ;;
            *)
                if grep -qF " $dir/mnt/$name " /proc/self/mountinfo 2>/dev/null; then
                    umount -l "$dir/mnt/$name" 2>/dev/null || true
                fi
                ;;
        esac
        pids+=("$(pid_in "$pidfile")")
    done
    end_pids "${pids[@]}"
    local volume
    volume="$(cat "$dir/volume" 2>/dev/null || true)"
    if [[ -n "$volume" ]]; then
        rm -rf "/var/run/gluster/vols/$volume" "/var/run/gluster/vols/${volume}c"
    fi
    local brick_file brick
    for brick_file in "$dir/brick-dir" "$dir/brick-dir-cached"; do
        [[ -s "$brick_file" ]] || continue
        brick="$(cat "$brick_file")"
        rm -f /var/log/glusterfs/bricks/"$(echo "${brick#/}" | tr / -)".log
        rm -rf "$brick"
    done
    rm -rf "$dir/run" "$dir/glusterd" "$dir/brick"
    rm -f "$REGISTRY/$(echo "$dir" | tr / _)"
}

wait_for() {
    local what=$1 tries=$2
    shift 2
    for _ in $(seq "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "multinode: timed out waiting for $what" >&2
    return 1
}

mount_node() {
    local dir=$1 name=$2 kind=${3:-}
    local volume host timeouts=(--entry-timeout=0 --attribute-timeout=0 --negative-timeout=0)
    volume="$(cat "$dir/volume")"
    if [[ "$kind" == cached ]]; then
        volume="${volume}c"
        timeouts=()
    fi
    host="$(hostname)"
    mkdir -p "$dir/mnt/$name" "$dir/run"
    glusterfs --process-name fuse --volfile-server="$host" --volfile-id="$volume" \
        "${timeouts[@]}" -p "$dir/run/$name.pid" -l "$dir/run/$name.log" "$dir/mnt/$name"
    wait_for "mount $dir/mnt/$name" 100 grep -qF " $dir/mnt/$name " /proc/self/mountinfo
    # The first operations on a fresh mount can fail until the client has connected to
    # the brick.
    wait_for "mount $dir/mnt/$name to answer" 100 stat -f "$dir/mnt/$name/."
    wait_for "mount $dir/mnt/$name to list" 100 ls "$dir/mnt/$name/"
}

start_cluster() {
    local dir=$1 nodes=$2
    local host volume brick cached_brick
    host="$(hostname)"
    volume="sz$$"
    echo "$volume" >"$dir/volume"
    mkdir -p "$dir/run" "$dir/glusterd"
    # The bricks live in memory when /dev/shm exists (bricks need extended attributes,
    # which tmpfs has for root); else under DIR.
    if [[ -d /dev/shm && -w /dev/shm ]]; then
        brick="$(mktemp -d /dev/shm/spatialzarr-brick.XXXXXX)"
        cached_brick="$(mktemp -d /dev/shm/spatialzarr-brick.XXXXXX)"
    else
        brick="$dir/brick/plain"
        cached_brick="$dir/brick/cached"
        mkdir -p "$brick" "$cached_brick"
    fi
    echo "$brick" >"$dir/brick-dir"
    echo "$cached_brick" >"$dir/brick-dir-cached"
    sed -e "s#option working-directory .*#option working-directory $dir/glusterd#" \
        /etc/glusterfs/glusterd.vol >"$dir/glusterd.vol"
    glusterd -f "$dir/glusterd.vol" -p "$dir/run/glusterd.pid" -l "$dir/run/glusterd.log"
    wait_for "glusterd" 100 gluster --mode=script peer status
    local g=(gluster --mode=script)
    "${g[@]}" volume create "$volume" "$host:$brick" force >/dev/null
    for cache in "${CACHES[@]}"; do
        "${g[@]}" volume set "$volume" "performance.$cache" off >/dev/null
    done
    "${g[@]}" volume start "$volume" >/dev/null
    # A second volume keeps the default caches (the tests show what they do).
    "${g[@]}" volume create "${volume}c" "$host:$cached_brick" force >/dev/null
    "${g[@]}" volume start "${volume}c" >/dev/null
    local brick_pidfile v
    for v in "$volume" "${volume}c"; do
        brick_pidfile="$(ls /var/run/gluster/vols/"$v"/*.pid 2>/dev/null | head -n 1)"
        [[ -n "$brick_pidfile" ]] || die "the brick of volume $v did not start (see $dir/run/glusterd.log)"
        if [[ "$v" == "$volume" ]]; then
            cp "$brick_pidfile" "$dir/run/brick.pid"
        else
            cp "$brick_pidfile" "$dir/run/brick-cached.pid"
        fi
    done
    for n in $(seq "$nodes"); do
        mount_node "$dir" "n$n"
    done
}

# The keeper: holds the machine-wide lock for the cluster's lifetime.
keep() {
    local dir=$1 nodes=$2 owner=$3
    exec 9>"$MACHINE_LOCK"
    if ! flock -w 300 9; then
        echo "another cluster did not end within 300 s" >"$dir/failed"
        exit 1
    fi
    mkdir -p "$REGISTRY"
    # What a killed keeper left behind.
    local stale
    for stale in "$REGISTRY"/*; do
        [[ -f "$stale" ]] || continue
        teardown "$(cat "$stale")" || true
        rm -f "$stale"
    done
    echo "$dir" >"$REGISTRY/$(echo "$dir" | tr / _)"
    trap 'teardown "$dir"; exit 0' TERM INT HUP
    # A process of its own, so that `set -e` stops it at the first failure.
    if ! bash "$SCRIPT" start "$dir" "$nodes" >>"$dir/keeper.log" 2>&1; then
        tail -n 5 "$dir/keeper.log" >"$dir/failed"
        teardown "$dir"
        exit 1
    fi
    touch "$dir/ready"
    while [[ ! -e "$dir/stop" ]]; do
        if [[ "$owner" != 0 ]] && ! kill -0 "$owner" 2>/dev/null; then
            break
        fi
        sleep 0.5
    done
    teardown "$dir"
    rm -f "$dir/ready" "$dir/stop"
    echo "torn down" >>"$dir/keeper.log"
    # The owner cannot remove its scratch folder once it has ended: the keeper does.
    if [[ "$owner" != 0 ]] && ! kill -0 "$owner" 2>/dev/null; then
        rm -rf "$dir"
    fi
}

up() {
    local dir=$1 nodes=${2:-2} owner=0
    shift $(($# >= 2 ? 2 : 1))
    if [[ "${1:-}" == --owner ]]; then owner=$2; fi
    local why
    why="$(why_unavailable)"
    [[ -z "$why" ]] || unavailable "$why"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    rm -f "$dir/ready" "$dir/failed" "$dir/stop"
    setsid bash "$SCRIPT" keep "$dir" "$nodes" "$owner" </dev/null >>"$dir/keeper.log" 2>&1 &
    echo $! >"$dir/keeper.pid"
    # Up to 300 s for a previous cluster to end, then up to 60 s to start.
    for _ in $(seq 3600); do
        [[ -e "$dir/ready" ]] && return 0
        if [[ -e "$dir/failed" ]]; then
            die "the cluster did not start: $(cat "$dir/failed")"
        fi
        kill -0 "$(cat "$dir/keeper.pid")" 2>/dev/null || die "the keeper ended early (see $dir/keeper.log)"
        sleep 0.1
    done
    down "$dir"
    die "the cluster did not start within 360 s"
}

down() {
    local dir
    dir="$(cd "$1" && pwd)"
    local keeper
    keeper="$(pid_in "$dir/keeper.pid")"
    if [[ -n "$keeper" ]] && kill -0 "$keeper" 2>/dev/null; then
        touch "$dir/stop"
        for _ in $(seq 300); do
            kill -0 "$keeper" 2>/dev/null || break
            sleep 0.1
        done
        end_pids "$keeper"
    fi
    teardown "$dir"
}

run() {
    local nodes=2
    if [[ "${1:-}" != -- ]]; then nodes=$1; shift; fi
    [[ "${1:-}" == -- ]] || die "usage: multinode.sh run [NODES] -- COMMAND..."
    shift
    RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/spatialzarr-multinode.XXXXXX")"
    local dir=$RUN_DIR
    trap 'down "$RUN_DIR"; rm -rf "$RUN_DIR"' EXIT
    trap 'exit 130' INT TERM
    up "$dir" "$nodes" --owner $$
    local mounts=()
    for n in $(seq "$nodes"); do mounts+=("$dir/mnt/n$n"); done
    SPATIALZARR_NODES="$(IFS=:; echo "${mounts[*]}")" "$@"
}

command="${1:-}"
shift || true
case "$command" in
    available)
        why="$(why_unavailable)"
        [[ -z "$why" ]] || unavailable "$why"
        ;;
    up) up "$@" ;;
    keep) keep "$@" ;;
    start) start_cluster "$@" ;;
    mount) mount_node "$(cd "$1" && pwd)" "$2" "${3:-}" ;;
    unmount) unmount_node "$(cd "$1" && pwd)" "$2" ;;
    down) down "$@" ;;
    run) run "$@" ;;
    *) die "usage: multinode.sh available | up DIR [NODES] [--owner PID] | mount DIR NAME | unmount DIR NAME | down DIR | run [NODES] -- COMMAND..." ;;
esac

# shellcheck shell=bash
# user.sh - what the rootless sections (run.sh, minimal.sh, multiarch.sh) share: they run kiln and buildah as
# an unprivileged user with subordinate ids (the tests' user, kiln-test-user, when bench.sh runs
# as root; the caller otherwise), with HOME, XDG_RUNTIME_DIR and TMPDIR under $WORK/u.
#   as_user CMD...   runs CMD as that user     UK=(kiln ...)  UB=(buildah ... vfs)  their stores

RUNUSER=kiln-test-user
AS_USER=()
[ "$(id -u)" -eq 0 ] && AS_USER=(runuser -u "$RUNUSER" -- env -i
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME="$WORK/u/home" XDG_RUNTIME_DIR="$WORK/u/xdg" TMPDIR="$WORK/u/tmp")
as_user() { "${AS_USER[@]}" "$@"; }
UB=(buildah --root "$WORK/u/broot" --runroot "$WORK/u/brun" --storage-driver vfs)
UK=("$WORK/u/kiln" --root "$WORK/u/kroot" --progress quiet)
user_setup() { # once: the user and its subordinate ids, $WORK/u owned by it, a copy of kiln it can run
  [ -d "$WORK/u" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    id "$RUNUSER" >/dev/null 2>&1 || useradd -m "$RUNUSER"
    grep -q "^$RUNUSER:" /etc/subuid || usermod --add-subuids 200000-265535 "$RUNUSER"
    grep -q "^$RUNUSER:" /etc/subgid || usermod --add-subgids 200000-265535 "$RUNUSER"
  fi
  mkdir -p "$WORK/u/home" "$WORK/u/xdg" "$WORK/u/tmp" "$WORK/u/bb/bin" "$WORK/u/ctx"
  cp "$KILN" "$WORK/u/kiln"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u"
  chmod 700 "$WORK/u/xdg"
}
buildah_rmi() { # NAME: remove a built image and what it alone used, so the next round starts alike
  as_user "${UB[@]}" rmi -f "$1" >/dev/null 2>&1 || true
  as_user "${UB[@]}" rmi --prune >/dev/null 2>&1 || true
}

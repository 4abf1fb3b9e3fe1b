# shellcheck shell=bash
# build.sh - the build section: FROM scratch + COPY of the corpus, kiln build vs buildah bud
# (vfs), cold ≤ 0.35×, warm ≤ 0.02×, and after one file of the context changed (no target;
# reported).

BUILDAH_ROOT=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/run" --storage-driver vfs)

build_setup() { # the context: the corpus hard-linked, so one file can change without touching it
  printf 'FROM scratch\nCOPY . /corpus/\n' > "$WORK/Dockerfile"
  cp -al "$CORPUS" "$WORK/ctx"
}
change_onefile() { # TAG: replace (not write through the link) one file of the context
  rm -f "$WORK/ctx/$ONEFILE"; echo "changed $1 $(date +%s%N)" > "$WORK/ctx/$ONEFILE"
}
kiln_build() { # cold|warm|onefile ROUND
  [ "$1" = cold ] && rm -rf "$WORK/kbuild"
  measure build "kiln build $1" "$2" "$KILN" --root "$WORK/kbuild" --progress quiet build "$WORK/ctx" -f "$WORK/Dockerfile" -t corpus || return 0
}
buildah_build() { # cold|warm|onefile ROUND
  [ "$1" = cold ] && { "${BUILDAH_ROOT[@]}" rmi -a -f >/dev/null 2>&1 || true; rm -rf "$WORK/buildah"; }
  measure build "buildah bud $1" "$2" "${BUILDAH_ROOT[@]}" bud --layers --network none -f "$WORK/Dockerfile" -t localhost/corpus "$WORK/ctx" || return 0
}

build_round() { # ROUND
  kiln_build cold "$1"; buildah_build cold "$1"
  kiln_build warm "$1"; buildah_build warm "$1"
  change_onefile "k$1"; kiln_build onefile "$1"
  change_onefile "b$1"; buildah_build onefile "$1"
}

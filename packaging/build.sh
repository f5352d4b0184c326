#!/usr/bin/env bash
# Builds the Debian packages hostplane-coordinator and hostplane-agent with dpkg-deb:
#
#   bash packaging/build.sh            # release build; packages in target/debian/
#
# Each package is described by packaging/<package>/: `control` (with @VERSION@, @ARCH@,
# @SHLIBS@ and @INSTALLED_SIZE@ filled in here), `files` (what goes where, with its mode),
# `conffiles`, and the maintainer scripts. Binaries are stripped as Debian does, shared library
# dependencies come from dpkg-shlibdeps.
#
# Options:
#   --profile NAME   cargo profile to build and package (default: release)
#   --out DIR        where the .deb files go (default: target/debian)
#   --version V      package version (default: the workspace version)
#   --no-build       package binaries that are already built
#   --fast           gzip -1 instead of xz (for tests; larger files, much quicker)
#   --package NAME   only this package (may be repeated)
# CARGO_TARGET_DIR is honoured. Needs dpkg-dev (dpkg-shlibdeps) and binutils (strip).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

profile=release
out="$root/target/debian"
version=""
build=1
compression=(-Zxz -z6)
packages=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --fast) compression=(-Zgzip -z1); shift ;;
    --package) packages+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "${#packages[@]}" -gt 0 ] || packages=(hostplane-coordinator hostplane-agent)

for tool in dpkg-deb dpkg-shlibdeps strip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build.sh: $tool is missing (apt-get install -y dpkg-dev binutils)" >&2
    exit 1
  fi
done

if [ -z "$version" ]; then
  # "path+file:///...#hostplane-agent@0.1.0" -> 0.1.0
  version="$(cargo pkgid -p hostplane-agent)"
  version="${version##*@}"
fi
arch="$(dpkg --print-architecture)"
# The date of the last commit (reproducible), or now outside a git checkout.
changelog_date="$(git -C "$root" log -1 --format=%cD 2>/dev/null || date -R)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$profile" in
  dev) profile_dir="$target_dir/debug" ;;
  *) profile_dir="$target_dir/$profile" ;;
esac

if [ "$build" = 1 ]; then
  build_args=()
  for package in "${packages[@]}"; do build_args+=(-p "$package" --bin "$package"); done
  cargo build --locked --profile "$profile" "${build_args[@]}"
fi

mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for package in "${packages[@]}"; do
  source="$root/packaging/$package"
  [ -f "$source/control" ] || { echo "build.sh: no packaging/$package/control" >&2; exit 1; }
  stage="$work/$package"
  mkdir -p "$stage/DEBIAN"

  # files: SOURCE DESTINATION MODE; SOURCE "bin:NAME" is a binary of the chosen profile.
  while read -r from to mode; do
    case "$from" in ''|'#'*) continue ;; esac
    if [ "${from#bin:}" != "$from" ]; then
      from="$profile_dir/${from#bin:}"
      [ -x "$from" ] || { echo "build.sh: $from is not built (drop --no-build?)" >&2; exit 1; }
    else
      from="$root/$from"
    fi
    if [ "${to%.gz}" != "$to" ] && [ "${from%.gz}" = "$from" ]; then
      # A destination ending in .gz is compressed as Debian does (no name, no time stamp).
      mkdir -p "$(dirname "$stage/$to")"
      gzip -9n -c "$from" > "$stage/$to"
      chmod "$mode" "$stage/$to"
    else
      install -D -m "$mode" "$from" "$stage/$to"
    fi
  done < "$source/files"
  # Debian wants a changelog with every package; ours points at the project's history.
  mkdir -p "$stage/usr/share/doc/$package"
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from the Hostplane sources; see their history for the changes.\n\n -- %s  %s\n' \
    hostplane "$version" "Hostplane developers <hostplane@example.invalid>" "$changelog_date" \
    | gzip -9n > "$stage/usr/share/doc/$package/changelog.gz"
  chmod 0644 "$stage/usr/share/doc/$package/changelog.gz"
  # Directories 0755 whatever the umask was.
  find "$stage" -type d -exec chmod 0755 {} +

  # Every program in usr/bin is one of ours: strip it as dh_strip would.
  binaries=()
  while IFS= read -r -d '' binary; do
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$binary"
    binaries+=("$binary")
  done < <(find "$stage/usr/bin" -type f -print0 2>/dev/null)

  shlibs=""
  if [ "${#binaries[@]}" -gt 0 ]; then
    # dpkg-shlibdeps wants to run in a source tree: give it the smallest one.
    mkdir -p "$work/shlibs-$package/debian"
    printf 'Source: hostplane\n\nPackage: %s\nArchitecture: any\n' "$package" \
      > "$work/shlibs-$package/debian/control"
    shlibs="$(cd "$work/shlibs-$package" && dpkg-shlibdeps -O --warnings=0 "${binaries[@]}")"
    shlibs="${shlibs#shlibs:Depends=}"
  fi

  for script in preinst postinst prerm postrm; do
    if [ -f "$source/$script" ]; then
      install -m 0755 "$source/$script" "$stage/DEBIAN/$script"
    fi
  done
  if [ -s "$source/conffiles" ]; then
    grep -v -e '^#' -e '^$' "$source/conffiles" > "$stage/DEBIAN/conffiles"
    chmod 0644 "$stage/DEBIAN/conffiles"
  fi
  (cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 --no-run-if-empty md5sum) > "$stage/DEBIAN/md5sums"
  chmod 0644 "$stage/DEBIAN/md5sums"

  size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
  depends="$(sed -n 's/^Depends: //p' "$source/control")"
  depends="${depends//@SHLIBS@/$shlibs}"
  depends="$(printf '%s' "$depends" | sed -e 's/^, //' -e 's/, ,/,/g' -e 's/, $//')"
  sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
    -e "s/^Depends: .*/Depends: $depends/" "$source/control" > "$stage/DEBIAN/control"
  chmod 0644 "$stage/DEBIAN/control"

  deb="$out/${package}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group "${compression[@]}" --build "$stage" "$deb" >/dev/null
  echo "$deb"
done

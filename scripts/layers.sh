#!/usr/bin/env bash
# Print which layer of src/ names which (a layer is a top-level module of src/lib.rs: a
# folder or a file), and fail when the graph has a cycle or a layer names one listed
# after it in lib.rs (the layers are listed bottom up). Unit tests (`#[cfg(test)]` to the
# end of a file) are left out: a test may use anything. See docs/design.md, "Layers".
# Usage: scripts/layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t layers < <(sed -n 's/^\(#\[cfg([^]]*)\] *\)\{0,1\}pub mod \([a-z_0-9]*\);.*/\2/p' src/lib.rs)
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && echo "$i" && return; done; echo -1; }

edges=$(
    for l in "${layers[@]}"; do
        files=$( { [ -f "src/$l.rs" ] && echo "src/$l.rs"; [ -d "src/$l" ] && find "src/$l" -name '*.rs'; } || true)
        for f in $files; do
            # Code only: stop at the unit tests, skip comments.
            awk '/^#\[cfg\(test\)\]/ { exit } { sub(/\/\/.*/, ""); print }' "$f" |
                grep -oE '\bcrate::[a-z_0-9]+' | sed "s/^crate::/$l /" || true
        done
    done | sort -u | awk '$1 != $2'
)
status=0
echo "layer -> layers it names (bottom up, as listed in src/lib.rs)"
for l in "${layers[@]}"; do
    uses=$(awk -v l="$l" '$1 == l { print $2 }' <<<"$edges" | while read -r u; do
        r=$(rank "$u"); [ "$r" -ge 0 ] && echo "$r $u"; done | sort -n | awk '{print $2}' | tr '\n' ' ')
    printf '  %-8s -> %s\n' "$l" "${uses:-(none)}"
    for u in $uses; do
        if [ "$(rank "$u")" -gt "$(rank "$l")" ]; then
            echo "layers.sh: $l names $u, which is above it in src/lib.rs" >&2
            status=1
        fi
    done
done
if ! tsort <<<"$edges" >/dev/null 2>/tmp/layers-tsort.$$; then
    echo "layers.sh: the import graph has a cycle:" >&2
    cat /tmp/layers-tsort.$$ >&2
    status=1
fi
rm -f /tmp/layers-tsort.$$
[ $status = 0 ] && echo "no cycle; no layer names one above it"
exit $status

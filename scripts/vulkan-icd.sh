#!/usr/bin/env bash
# Prints the Vulkan ICD manifest of a CPU driver, for VK_ICD_FILENAMES:
#   scripts/vulkan-icd.sh lavapipe     Mesa's lavapipe (mesa-vulkan-drivers): the "full" profile
#   scripts/vulkan-icd.sh swiftshader  SwiftShader (shipped with chromium): the "baseline" profile
set -euo pipefail
case "${1:-}" in
  lavapipe)
    candidates=(/usr/share/vulkan/icd.d/lvp_icd.*.json)
    hint="apt-get install mesa-vulkan-drivers" ;;
  swiftshader)
    # Where Debian puts it; elsewhere, wherever the chromium packages say.
    candidates=(/usr/lib/chromium/vk_swiftshader_icd.json
                $(dpkg -L chromium chromium-common 2>/dev/null | grep 'swiftshader_icd\.json$' || true))
    hint="apt-get install chromium" ;;
  *) echo "usage: $0 lavapipe|swiftshader" >&2; exit 2 ;;
esac
for f in "${candidates[@]}"; do
  if [ -f "$f" ]; then echo "$f"; exit 0; fi
done
echo "no $1 Vulkan driver found (install it with: $hint)" >&2
exit 1

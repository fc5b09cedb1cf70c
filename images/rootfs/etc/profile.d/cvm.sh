# OpenClaw in this image is pinned and measured: never let it update itself.
export OPENCLAW_NO_AUTO_UPDATE=1

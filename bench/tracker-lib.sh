# Sourced by the bench scripts: start_tracker SHOAL LOG starts `SHOAL tracker` on 127.0.0.1
# (any free port, bounded by `timeout`), sets `tr` to its PID and `addr` to the address it
# listens on, or says why not and exits.
start_tracker() {
  timeout 600 "$1" tracker --listen 127.0.0.1:0 2> "$2" &
  tr=$!
  addr=
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*tracker listening on \([0-9.:]*\).*/\1/p' "$2" | head -1)
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  echo "the tracker did not start:" >&2
  cat "$2" >&2
  kill "$tr"
  exit 1
}

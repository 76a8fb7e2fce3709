#!/usr/bin/env bash
# Seconds from starting mosquitto (the plugin on DATA/registry.db) to its mTLS listener accepting a
# TCP connection, and to the first successful mTLS connect of device CLIENT (CONNACK 0, one
# mosquitto_pub attempt every 0.1 s).
# Hand-run (docs/benchmarks.md, issue 15); the broker runs as root (`user root`).
# usage: bench/broker_start.sh PLUGIN.so DATA_DIR PORT CLIENT CERT KEY
set -u
plugin=$1 data=$2 port=$3 client=$4 cert=$5 key=$6
work=$(mktemp -d)
cat >"$work/mosquitto.conf" <<CONF
user root
plugin $plugin
plugin_opt_registry $data/registry.db
per_listener_settings false
allow_anonymous false
log_dest stderr
log_type all
listener $port 127.0.0.1
cafile $data/ca/chain.pem
certfile $data/server.crt
keyfile $data/server.key
require_certificate true
use_identity_as_username false
use_subject_as_username false
CONF
t0=$(date +%s.%N)
/usr/sbin/mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pid=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "mosquitto exited"; cat "$work/mosquitto.log"; exit 1; }
  sleep 0.02
done
t1=$(date +%s.%N)
attempts=0
until mosquitto_pub -h 127.0.0.1 -p "$port" --cafile "$data/ca/chain.pem" --cert "$cert" --key "$key" \
    -i "$client" -t "devices/$client/t" -m x -q 1 2>/dev/null; do
  attempts=$((attempts + 1))
  sleep 0.1
done
t2=$(date +%s.%N)
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$pid/stat")
kill "$pid"; wait "$pid" 2>/dev/null
printf 'listener %.2f s, first mTLS connect %.2f s (%d refused attempts), broker CPU %.1f s, load %s\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)" "$attempts" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
grep -a "onboard:" "$work/mosquitto.log" | head -5
rm -rf "$work"

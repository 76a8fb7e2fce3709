# shellcheck shell=bash
# shellcheck disable=SC2154  # work, data, onboardctl, plugin: set by scripts/demo
# `scripts/demo fleet`, sourced by scripts/demo after it has built and set up its helpers (show, say,
# client, free_port, wait_for_port, init_data_dir, issue_server_cert) and its cleanup, which stops
# everything in fleet_pids and the cluster in pg_dir.
#
# Two Mosquitto brokers with the plugin decide from one registry in PostgreSQL (a throwaway cluster
# from tests/support/pg_cluster), each connected as a role that may only read. A device connected
# to both is revoked with onboardctl: it is disconnected from both (the delay measured per broker)
# and refused by both, while a control device stays connected and keeps receiving.

fleet_brokers=(a b)
declare -A fleet_port=()

fail() {
  echo "FAILED: $*" >&2
  exit 1
}

# A PostgreSQL cluster on 127.0.0.1, a database `onboard` in it, and the registry's schema and CA
# made there by `onboardctl init` as the cluster's superuser (the tables' owner).
fleet_registry() {
  say "a throwaway PostgreSQL cluster on 127.0.0.1 (tests/support/pg_cluster)"
  pg_dir="$work/pg"
  show tests/support/pg_cluster start "$pg_dir"
  local admin
  admin=$(cat "$pg_dir/conninfo")  # a keyword string with passfile=: no password in it
  show psql "$admin" -v ON_ERROR_STOP=1 -qc 'CREATE DATABASE onboard'
  pg_port=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$admin")
  export ONBOARD_REGISTRY="${admin/dbname=postgres/dbname=onboard}"
  echo "ONBOARD_REGISTRY=$ONBOARD_REGISTRY"

  say "create the data directory (CA, CRL) and the registry's schema in PostgreSQL"
  init_data_dir
  say "the brokers' server certificate, from the same CA"
  issue_server_cert
}

# The brokers' role, with only the rights `onboardctl registry grants` prints, and its password in a
# pgpass file that only the brokers' user (mosquitto) can read. The writer role is what onboardctl
# and `onboardctl serve` would connect as in production; here onboardctl uses the superuser.
fleet_broker_role() {
  say "roles: onboard_broker for the brokers (reads), onboard_writer for onboardctl (reads and writes rows)"
  local password
  password=$(openssl rand -hex 24)
  # Through stdin, never on a command line.
  psql "$ONBOARD_REGISTRY" -v ON_ERROR_STOP=1 -q <<SQL
CREATE ROLE onboard_broker LOGIN PASSWORD '$password';
CREATE ROLE onboard_writer NOLOGIN;
SQL
  printf '\n$ onboardctl registry grants --broker-role onboard_broker --writer-role onboard_writer > grants.sql\n'
  "$onboardctl" registry grants --broker-role onboard_broker --writer-role onboard_writer \
    >"$work/grants.sql"
  grep -E '^(GRANT|REVOKE)' "$work/grants.sql"
  show psql "$ONBOARD_REGISTRY" -v ON_ERROR_STOP=1 -q -f "$work/grants.sql"

  (umask 077 && printf '127.0.0.1:%s:onboard:onboard_broker:%s\n' "$pg_port" "$password" \
    >"$work/broker.pgpass")
  [ "$(id -u)" -ne 0 ] || chown mosquitto "$work/broker.pgpass"
  broker_registry="postgresql://onboard_broker@127.0.0.1:$pg_port/onboard?passfile=$work/broker.pgpass"
  echo "the brokers' registry location: $broker_registry"
  show ls -l "$work/broker.pgpass"
}

# Three thermometers with keys made here; thermometers may read each other's temperature.
fleet_onboard() {
  say "onboard sensor-001 (to be revoked), sensor-002 (the control) and sensor-003 (a publisher)"
  local d
  for d in sensor-001 sensor-002 sensor-003; do
    show "$onboardctl" device register "$d" --type thermometer --location lab \
      --key-out "$work/$d.key" --cert-out "$work/$d.crt"
  done
  show "$onboardctl" device list

  say "the broker role reads the registry and cannot change a row"
  show psql "$broker_registry" -Atc 'SELECT count(*) FROM devices'
  printf '\n$ psql "%s" -c "UPDATE devices SET status = '"'"'active'"'"'"\n' "$broker_registry"
  if psql "$broker_registry" -v ON_ERROR_STOP=1 -qc "UPDATE devices SET status = 'active'" 2>&1; then
    fail "the broker role could change a row"
  fi
}

# Broker NAME on a free loopback port: mosquitto.conf.example with the PostgreSQL registry and a
# cache file of its own, in a directory the broker's user may write.
fleet_start_broker() {
  local name=$1 dir="$work/broker-$1" port
  mkdir "$dir"
  [ "$(id -u)" -ne 0 ] || chown mosquitto "$dir"
  port=$(free_port 18883)
  sed -e "s|/var/lib/mosquitto-onboard|$data|g" -e "s|/etc/mosquitto/certs|$data|g" \
    -e "s|^listener 8883.*|listener $port 127.0.0.1|" -e "s|^plugin /usr/lib/.*|plugin $plugin|" \
    -e "s|^plugin_opt_registry .*|plugin_opt_registry $broker_registry|" \
    -e "s|^#plugin_opt_cache_file .*|plugin_opt_cache_file $dir/registry.snapshot|" \
    mosquitto.conf.example >"$dir/mosquitto.conf"
  say "start broker $name on 127.0.0.1:$port"
  grep -E '^(plugin_opt_registry|plugin_opt_cache_file|listener) ' "$dir/mosquitto.conf"
  mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
  fleet_pids+=($!)
  wait_for_port "$port" || {
    cat "$dir/mosquitto.log" >&2
    fail "broker $name did not start"
  }
  grep "onboard:" "$dir/mosquitto.log" || true
  fleet_port[$name]=$port
}

# subscribe NAME DEVICE BROKER TOPIC [OPTION...]: mosquitto_sub in the background, its output in
# $work/NAME.log, the time it ended in $work/NAME.closed; returns once the broker acknowledged the
# subscription.
subscribe() {
  local name=$1 device=$2 broker=$3 topic=$4
  shift 4
  # shellcheck disable=SC2046
  (
    # Line-buffered, so that its debug lines (SUBACK) show in the file as they happen.
    stdbuf -oL mosquitto_sub $(client "$device" "${fleet_port[$broker]}") -V 5 -d -t "$topic" "$@" \
      >"$work/$name.log" 2>&1 &
    echo $! >"$work/$name.pid"
    wait $! || true
    date +%s%N >"$work/$name.closed"
  ) &
  for _ in $(seq 100); do
    grep -q "received SUBACK" "$work/$name.log" 2>/dev/null && break
    sleep 0.05
  done
  fleet_pids+=("$(cat "$work/$name.pid")")
  grep -q "received SUBACK" "$work/$name.log" || {
    cat "$work/$name.log" >&2
    fail "$device could not subscribe on broker $broker"
  }
  echo "$device subscribed to $topic on broker $broker (port ${fleet_port[$broker]})"
}

fleet_connect() {
  say "a live ACL change on both brokers: thermometers may read every thermometer's temperature"
  show "$onboardctl" acl grant --group thermometer --access 'subscribe|read' \
    --topic 'devices/+/temperature'
  sleep 0.5
  say "sensor-001 connects to each broker; the control sensor-002 too"
  local b
  for b in "${fleet_brokers[@]}"; do
    subscribe "revoked-$b" sensor-001 "$b" 'devices/sensor-001/#'
    subscribe "control-$b" sensor-002 "$b" 'devices/sensor-003/temperature' -C 1 -v
  done
}

# Revokes sensor-001 and measures, per broker, from the start of the revoke command to the moment
# its connection there ended.
fleet_revoke() {
  say "revoke sensor-001 while it is connected to both brokers"
  local start finished b all closed failed=0
  start=$(date +%s%N)
  show "$onboardctl" device revoke sensor-001 --reason keyCompromise
  finished=$(date +%s%N)
  for _ in $(seq 100); do  # up to 5 s for every broker
    all=1
    for b in "${fleet_brokers[@]}"; do [ -s "$work/revoked-$b.closed" ] || all=0; done
    [ "$all" -eq 0 ] || break
    sleep 0.05
  done
  echo
  echo "the revoke command (registry transaction, CRL, audit) took $(((finished - start) / 1000000)) ms"
  for b in "${fleet_brokers[@]}"; do
    if [ -s "$work/revoked-$b.closed" ]; then
      closed=$(cat "$work/revoked-$b.closed")
      echo "broker $b (port ${fleet_port[$b]}): sensor-001 disconnected $(((closed - start) / 1000000)) ms after the revoke command started"
    else
      echo "broker $b (port ${fleet_port[$b]}): sensor-001 was NOT disconnected within 5 s" >&2
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || fail "a broker kept the revoked device connected"
}

fleet_check_refused() {
  say "sensor-001's reconnect is refused by both brokers"
  local b out
  for b in "${fleet_brokers[@]}"; do
    printf '\n$ mosquitto_pub ... -i sensor-001 -p %s -t devices/sensor-001/temperature -m 22\n' \
      "${fleet_port[$b]}"
    # shellcheck disable=SC2046
    if out=$(mosquitto_pub $(client sensor-001 "${fleet_port[$b]}") \
      -t devices/sensor-001/temperature -m 22 2>&1); then
      fail "broker $b accepted the revoked device's reconnect"
    fi
    echo "broker $b: $out"
  done
}

fleet_check_control() {
  say "the control sensor-002 stayed connected to both and still receives"
  local b
  for b in "${fleet_brokers[@]}"; do
    [ ! -s "$work/control-$b.closed" ] || {
      cat "$work/control-$b.log" >&2
      fail "sensor-002 was disconnected from broker $b"
    }
    # shellcheck disable=SC2046
    show mosquitto_pub $(client sensor-003 "${fleet_port[$b]}") -t devices/sensor-003/temperature \
      -m "20.5 via $b"
    for _ in $(seq 100); do
      [ -s "$work/control-$b.closed" ] && break
      sleep 0.05
    done
    grep -qx "devices/sensor-003/temperature 20.5 via $b" "$work/control-$b.log" ||
      fail "sensor-002 did not receive sensor-003's message on broker $b"
    echo "sensor-002 on broker $b received: $(grep -x 'devices/sensor-003/temperature.*' "$work/control-$b.log")"
  done
}

fleet_logs() {
  local b
  for b in "${fleet_brokers[@]}"; do
    say "what broker $b logged"
    grep "onboard:" "$work/broker-$b/mosquitto.log"
  done
}

fleet_demo() {
  fleet_registry
  fleet_broker_role
  fleet_onboard
  local b
  for b in "${fleet_brokers[@]}"; do fleet_start_broker "$b"; done
  fleet_connect
  fleet_revoke
  fleet_check_refused
  fleet_check_control
  fleet_logs
  echo
  echo "fleet demo complete"
}

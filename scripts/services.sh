#!/usr/bin/env bash
# Real Apache Kafka, real ClickHouse and a real schema registry on loopback, for tally's tests
# and for local use.
#
#   scripts/services.sh install   fetch what is missing (Kafka jars, libchdb, Apicurio), start nothing
#   scripts/services.sh start     install if needed, start all three, wait until each answers
#   scripts/services.sh stop      stop exactly the processes this script started
#   scripts/services.sh status    say what runs where
#   scripts/services.sh start-kafka | stop-kafka | start-clickhouse | stop-clickhouse |
#                       start-registry | stop-registry
#                                  one service only (tests that stop a service run one of
#                                  their own on other ports this way: TALLY_KAFKA_PORT,
#                                  TALLY_CLICKHOUSE_HTTP_PORT, TALLY_CLICKHOUSE_TCP_PORT)
#
# Kafka: Apache Kafka (KRaft, one node acting as broker and controller) resolved from Maven
# Central with its runtime dependencies, run as `java kafka.Kafka server.properties`.
# ClickHouse: the engine in chdb's libchdb.so (npm), serving ClickHouse's HTTP and native
# protocols (see scripts/lib/clickhouse_server.py).
# Schema registry: Apicurio Registry (Maven Central's ready-to-run distribution, in-memory
# storage), whose Confluent-compatible REST API (`/apis/ccompat/v7`) the Confluent wire format
# tests use. (Karapace, the registry the issue named, is not on PyPI; Confluent's own is not on
# Maven Central.)
#
# When TALLY_KAFKA_BROKERS, TALLY_CLICKHOUSE_URL or TALLY_SCHEMA_REGISTRY_URL is set, that
# service is the user's (say, a docker-compose deployment): this script neither starts nor
# stops it, only checks it answers.
#
# Data, PIDs and logs live under $TALLY_SERVICES_DIR (default: .services/ in the repo, ignored
# by git). Downloads are cached under $TALLY_CACHE_DIR (default: ~/.cache/tally).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${TALLY_SERVICES_DIR:-$ROOT/.services}
CACHE=${TALLY_CACHE_DIR:-$HOME/.cache/tally}

KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3
CHDB_PACKAGE=@chdb/lib-linux-x64-gnu
CHDB_VERSION=26.7.3-stable.1

KAFKA_HOST=127.0.0.1
KAFKA_PORT=${TALLY_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${TALLY_KAFKA_CONTROLLER_PORT:-9093}
CLICKHOUSE_HTTP_PORT=${TALLY_CLICKHOUSE_HTTP_PORT:-8123}
CLICKHOUSE_TCP_PORT=${TALLY_CLICKHOUSE_TCP_PORT:-9000}
REGISTRY_PORT=${TALLY_SCHEMA_REGISTRY_PORT:-8081}
APICURIO_VERSION=2.6.13.Final
START_TIMEOUT_SECONDS=${TALLY_SERVICES_START_TIMEOUT:-90}

KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
CHDB_DIR=$CACHE/chdb-$CHDB_VERSION
LIBCHDB=$CHDB_DIR/node_modules/$CHDB_PACKAGE/libchdb.so
APICURIO_DIR=$CACHE/apicurio-registry-$APICURIO_VERSION

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {
  say "installing Debian packages: $*"
  if [ -z "${TALLY_APT_UPDATED:-}" ]; then
    apt-get update -qq || die "apt-get update failed; install $* by hand"
    export TALLY_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed"
}

need_command() { # need_command COMMAND DEBIAN_PACKAGE...
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 || apt_install "$@"
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing $*"
}

# ---------------------------------------------------------------- install

install_kafka() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  need_command java openjdk-17-jre-headless
  need_command mvn maven
  say "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies (Maven Central)"
  local work
  work=$(mktemp -d)
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.tally</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through slf4j 1.7; this routes it to log4j2 so the broker log is written. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$work/libs" -DincludeScope=runtime >"$work/mvn.log" 2>&1; then
    tail -20 "$work/mvn.log" >&2
    die "Maven could not resolve Apache Kafka $KAFKA_VERSION. If Maven Central refuses, the fallback is tansu (a Kafka-compatible broker): see README 'Test services'. Tests of exactly-once and lag need the real Apache Kafka."
  fi
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  rm -rf "$KAFKA_LIBS"
  mv "$work/libs" "$KAFKA_LIBS"
  touch "$KAFKA_LIBS/.complete"
  rm -rf "$work"
  say "Kafka $KAFKA_VERSION: $(ls "$KAFKA_LIBS" | wc -l) jars in $KAFKA_LIBS"
}

install_clickhouse() {
  [ -f "$LIBCHDB" ] && return 0
  need_command npm npm
  need_command python3 python3
  say "installing $CHDB_PACKAGE@$CHDB_VERSION (the ClickHouse engine as libchdb.so, npm)"
  mkdir -p "$CHDB_DIR"
  npm install --no-audit --no-fund --loglevel=error --prefix "$CHDB_DIR" \
    "$CHDB_PACKAGE@$CHDB_VERSION" >"$CHDB_DIR/npm.log" 2>&1 \
    || { tail -20 "$CHDB_DIR/npm.log" >&2; die "npm could not install $CHDB_PACKAGE@$CHDB_VERSION"; }
  [ -f "$LIBCHDB" ] || die "$CHDB_PACKAGE@$CHDB_VERSION installed but has no libchdb.so at $LIBCHDB"
}

install_registry() {
  [ -f "$APICURIO_DIR/.complete" ] && return 0
  need_command java openjdk-17-jre-headless
  need_command mvn maven
  say "fetching io.apicurio:apicurio-registry-app:$APICURIO_VERSION (its ready-to-run distribution, Maven Central)"
  local work
  work=$(mktemp -d)
  # The dependency plugin's 2.8 copies the one artifact without resolving its parent POM.
  if ! mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:2.8:copy \
      -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$work" >"$work/mvn.log" 2>&1; then
    tail -20 "$work/mvn.log" >&2
    die "Maven could not fetch Apicurio Registry $APICURIO_VERSION"
  fi
  rm -rf "$APICURIO_DIR"
  mkdir -p "$APICURIO_DIR"
  tar -xzf "$work/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$APICURIO_DIR"
  rm -rf "$work"
  ls "$APICURIO_DIR"/*-runner.jar >/dev/null 2>&1 || die "Apicurio $APICURIO_VERSION has no runner jar in $APICURIO_DIR"
  touch "$APICURIO_DIR/.complete"
}

# ---------------------------------------------------------------- process helpers

pid_alive() { # pid_alive PIDFILE
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

port_open() { # port_open PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

stop_pid() { # stop_pid NAME PIDFILE
  local name=$1 pidfile=$2 pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    say "$name: not running"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name: pid $pid did not stop within 10 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "$name: stopped (pid $pid)"
}

wait_until() { # wait_until NAME LOGFILE PIDFILE COMMAND...
  local name=$1 log=$2 pidfile=$3; shift 3
  local deadline=$((SECONDS + START_TIMEOUT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pidfile" ] && ! pid_alive "$pidfile"; then
      tail -40 "$log" >&2 || true
      die "$name exited during start-up; its log is $log (last lines above)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -40 "$log" >&2 || true
      die "$name did not answer within ${START_TIMEOUT_SECONDS}s; its log is $log (last lines above)"
    fi
    sleep 0.25
  done
}

# ---------------------------------------------------------------- Kafka

kafka_probe() { python3 "$ROOT/scripts/lib/kafka_probe.py" "$1" 2; }

write_kafka_config() {
  local dir=$DATA/kafka
  cat >"$dir/server.properties" <<EOF
# Written by scripts/services.sh: a single KRaft node for tests and local use.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
EOF
}

start_kafka() {
  if [ -n "${TALLY_KAFKA_BROKERS:-}" ]; then
    say "Kafka: TALLY_KAFKA_BROKERS=$TALLY_KAFKA_BROKERS is set; using it, starting nothing"
    wait_until "Kafka at $TALLY_KAFKA_BROKERS" /dev/null "" kafka_probe "${TALLY_KAFKA_BROKERS%%,*}"
    return 0
  fi
  local dir=$DATA/kafka pidfile=$DATA/kafka/kafka.pid
  if pid_alive "$pidfile"; then
    say "Kafka: already running (pid $(cat "$pidfile")) at $KAFKA_HOST:$KAFKA_PORT"
    return 0
  fi
  if port_open $KAFKA_PORT || port_open $KAFKA_CONTROLLER_PORT; then
    die "port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT is taken by a process this script did not start; stop it, or set TALLY_KAFKA_BROKERS to use it"
  fi
  install_kafka
  mkdir -p "$dir/data"
  write_kafka_config
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    # Like Kafka's own random-uuid: an id starting with "-" would be read as an option.
    cluster_id=$(python3 -c '
import base64, uuid
while True:
    text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not text.startswith("-"):
        print(text)
        break')
    java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting Kafka's storage failed"; }
  fi
  say "Kafka: starting Apache Kafka $KAFKA_VERSION (KRaft) on $KAFKA_HOST:$KAFKA_PORT"
  setsid nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_until "Kafka" "$dir/server.log" "$pidfile" kafka_probe "$KAFKA_HOST:$KAFKA_PORT"
  say "Kafka: ready ($(kafka_probe "$KAFKA_HOST:$KAFKA_PORT")), pid $(cat "$pidfile"), log $dir/server.log"
}

# ---------------------------------------------------------------- ClickHouse

clickhouse_ping() { curl -fsS --max-time 2 "$1/ping"; }

start_clickhouse() {
  if [ -n "${TALLY_CLICKHOUSE_URL:-}" ]; then
    say "ClickHouse: TALLY_CLICKHOUSE_URL=$TALLY_CLICKHOUSE_URL is set; using it, starting nothing"
    wait_until "ClickHouse at $TALLY_CLICKHOUSE_URL" /dev/null "" clickhouse_ping "$TALLY_CLICKHOUSE_URL"
    return 0
  fi
  need_command curl curl
  local dir=$DATA/clickhouse pidfile=$DATA/clickhouse/clickhouse.pid
  local url=http://127.0.0.1:$CLICKHOUSE_HTTP_PORT
  if pid_alive "$pidfile"; then
    say "ClickHouse: already running (pid $(cat "$pidfile")) at $url"
    return 0
  fi
  if port_open $CLICKHOUSE_HTTP_PORT || port_open $CLICKHOUSE_TCP_PORT; then
    die "port $CLICKHOUSE_HTTP_PORT or $CLICKHOUSE_TCP_PORT is taken by a process this script did not start; stop it, or set TALLY_CLICKHOUSE_URL to use it"
  fi
  install_clickhouse
  mkdir -p "$dir/data"
  say "ClickHouse: starting ClickHouse $CHDB_VERSION (libchdb) on $url"
  setsid nohup python3 "$ROOT/scripts/lib/clickhouse_server.py" "$LIBCHDB" "$dir/data" \
    $CLICKHOUSE_HTTP_PORT $CLICKHOUSE_TCP_PORT >"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_until "ClickHouse" "$dir/server.log" "$pidfile" clickhouse_ping "$url"
  local version
  version=$(curl -fsS "$url/?query=SELECT%20version()")
  say "ClickHouse: ready (server version $version), pid $(cat "$pidfile"), log $dir/server.log"
}

# ---------------------------------------------------------------- schema registry

registry_ping() { curl -fsS --max-time 2 "$1/subjects"; }

start_registry() {
  if [ -n "${TALLY_SCHEMA_REGISTRY_URL:-}" ]; then
    say "Schema registry: TALLY_SCHEMA_REGISTRY_URL=$TALLY_SCHEMA_REGISTRY_URL is set; using it, starting nothing"
    wait_until "schema registry at $TALLY_SCHEMA_REGISTRY_URL" /dev/null "" registry_ping "$TALLY_SCHEMA_REGISTRY_URL"
    return 0
  fi
  need_command curl curl
  local dir=$DATA/registry pidfile=$DATA/registry/registry.pid
  local url=http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7
  if pid_alive "$pidfile"; then
    say "Schema registry: already running (pid $(cat "$pidfile")) at $url"
    return 0
  fi
  if port_open $REGISTRY_PORT; then
    die "port $REGISTRY_PORT is taken by a process this script did not start; stop it, or set TALLY_SCHEMA_REGISTRY_URL to use it"
  fi
  install_registry
  mkdir -p "$dir"
  say "Schema registry: starting Apicurio Registry $APICURIO_VERSION (in memory) on $url"
  # Loopback only; the same id for schemas that differ only in white space, as Confluent's.
  QUARKUS_HTTP_HOST=127.0.0.1 QUARKUS_HTTP_PORT=$REGISTRY_PORT HTTP_PORT=$REGISTRY_PORT \
    ENABLE_CCOMPAT_CANONICAL_HASH_MODE=true \
    setsid nohup java -Xms64m -Xmx256m -XX:+UseSerialGC -jar "$(ls "$APICURIO_DIR"/*-runner.jar)" \
    >"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_until "Schema registry" "$dir/server.log" "$pidfile" registry_ping "$url"
  say "Schema registry: ready, pid $(cat "$pidfile"), log $dir/server.log"
}

# ---------------------------------------------------------------- commands

status() {
  local k=$DATA/kafka/kafka.pid c=$DATA/clickhouse/clickhouse.pid
  if [ -n "${TALLY_KAFKA_BROKERS:-}" ]; then say "Kafka: user's, at $TALLY_KAFKA_BROKERS"
  elif pid_alive "$k"; then say "Kafka: running, pid $(cat "$k"), $KAFKA_HOST:$KAFKA_PORT"
  else say "Kafka: not running"; fi
  if [ -n "${TALLY_CLICKHOUSE_URL:-}" ]; then say "ClickHouse: user's, at $TALLY_CLICKHOUSE_URL"
  elif pid_alive "$c"; then say "ClickHouse: running, pid $(cat "$c"), http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
  else say "ClickHouse: not running"; fi
  local r=$DATA/registry/registry.pid
  if [ -n "${TALLY_SCHEMA_REGISTRY_URL:-}" ]; then say "Schema registry: user's, at $TALLY_SCHEMA_REGISTRY_URL"
  elif pid_alive "$r"; then say "Schema registry: running, pid $(cat "$r"), http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
  else say "Schema registry: not running"; fi
}

case "${1:-}" in
  install) install_kafka; install_clickhouse; install_registry ;;
  start) mkdir -p "$DATA"; start_clickhouse; start_kafka; start_registry ;;
  stop)
    [ -n "${TALLY_KAFKA_BROKERS:-}" ] || stop_pid Kafka "$DATA/kafka/kafka.pid"
    [ -n "${TALLY_CLICKHOUSE_URL:-}" ] || stop_pid ClickHouse "$DATA/clickhouse/clickhouse.pid"
    [ -n "${TALLY_SCHEMA_REGISTRY_URL:-}" ] || stop_pid "Schema registry" "$DATA/registry/registry.pid"
    ;;
  status) status ;;
  start-kafka) mkdir -p "$DATA"; start_kafka ;;
  start-clickhouse) mkdir -p "$DATA"; start_clickhouse ;;
  stop-clickhouse) [ -n "${TALLY_CLICKHOUSE_URL:-}" ] || stop_pid ClickHouse "$DATA/clickhouse/clickhouse.pid" ;;
  stop-kafka) [ -n "${TALLY_KAFKA_BROKERS:-}" ] || stop_pid Kafka "$DATA/kafka/kafka.pid" ;;
  start-registry) mkdir -p "$DATA"; start_registry ;;
  stop-registry) [ -n "${TALLY_SCHEMA_REGISTRY_URL:-}" ] || stop_pid "Schema registry" "$DATA/registry/registry.pid" ;;
  *) echo "usage: $0 install|start|stop|status|start-kafka|stop-kafka|start-clickhouse|stop-clickhouse|start-registry|stop-registry" >&2; exit 2 ;;
esac

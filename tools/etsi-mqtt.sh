#!/usr/bin/env bash
# Runs the ETSI suite's MQTT notification cases (tag sub-mqtt-notification, which
# ../shared/tools/etsi-suite.sh excludes) against `kizuna serve` and a real local mosquitto.
#
#   tools/etsi-mqtt.sh SUITE_DIR [OUT_DIR]
#
# SUITE_DIR is a checkout of the suite (never committed here). Its keyword "Start Mqtt Server"
# runs `docker run ... scorpio-test-mosquitto:latest` on a compose network, which a machine
# without docker (or without that image) cannot do: every case then fails on connection refused.
# This script copies the suite to a temporary directory, replaces that keyword and "Stop Mqtt
# Server" by ones that start and stop the Debian mosquitto with the suite's two configurations
# (anonymous, and user_with_password from the suite's own password file), listening on 1883 and
# 8085 on loopback, and runs the four MQTT files. docs/conformance.md has the results with and
# without the change. Needs: mosquitto, the suite's venv ($ETSI_VENV, with MQTTLibrary), and the
# context map of etsi-suite.sh (`etsi-suite.sh context-map SUITE_DIR > map.json`, $ETSI_CONTEXTS).
set -euo pipefail
suite=$(cd "${1:?SUITE_DIR}" && pwd)
out=$(mkdir -p "${2:-etsi-mqtt-results}" && cd "${2:-etsi-mqtt-results}" && pwd)
venv=${ETSI_VENV:?the suite venv}
contexts=${ETSI_CONTEXTS:?the context map}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/kizuna-etsi-mqtt-XXXXXX)
trap 'pkill -f "mosquitto -c $work/" || true; [[ -n ${node:-} ]] && kill "$node" 2>/dev/null; rm -rf "$work"' EXIT

cp -r "$suite" "$work/suite"
# Run as root, mosquitto drops to its own user, which must read the configurations.
chmod 755 "$work"
printf 'allow_anonymous true\nlistener 1883 127.0.0.1\nlistener 8085 127.0.0.1\n' >"$work/mosquitto.conf"
printf 'allow_anonymous false\nlistener 1883 127.0.0.1\nlistener 8085 127.0.0.1\npassword_file %s\n' \
  "$work/suite/resources/mqttUtils/mosquitto/mosquitto_pwd" >"$work/mosquitto_with_user.conf"
"$venv/bin/python" - "$work" <<'PY'
import sys
work = sys.argv[1]
path = f"{work}/suite/resources/mqttUtils/MqttUtils.resource"
text = open(path).read()
start = text.index("Start Mqtt Server\n")
open(path, "w").write(text[:start] + f"""Start Mqtt Server
    [Arguments]    ${{conf_file_name}}    ${{port}}
    Run Process    pkill -f 'mosquitto -c {work}/'    shell=yes
    Start Process    mosquitto -c {work}/${{conf_file_name}}    shell=yes    alias=mosquitto
    Wait Until Keyword Succeeds    5s    100ms    Mqtt Port Is Open    ${{port}}

Mqtt Port Is Open
    [Arguments]    ${{port}}
    ${{result}}=    Run Process    ss -ltn | grep -q '127.0.0.1:${{port}} '    shell=yes
    Should Be Equal As Integers    ${{result.rc}}    0

Stop Mqtt Server
    Run Process    pkill -f 'mosquitto -c {work}/'    shell=yes
""")
PY

port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PYTHONPATH="$here/src" "$here/.venv/bin/python" -m kizuna serve --host 127.0.0.1 --port "$port" \
  --store "sqlite:///$work/etsi.db" --context-map "$contexts" --log-level warning >"$out/server.log" 2>&1 &
node=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.3; done
base="http://127.0.0.1:$port/ngsi-ld/v1"
cd "$work/suite"
"$venv/bin/robot" --outputdir "$out" --output output.xml --log log.html --report NONE --console dotted \
  --variable "url:$base" --variable "temporal_api_url:$base" --variable mqtt_broker_host:127.0.0.1 \
  --variable notification_server_host:127.0.0.1 --variable context_source_host:127.0.0.1 \
  --variable context_server_host:127.0.0.1 --include sub-mqtt-notification \
  TP/NGSI-LD/ContextInformation/Subscription/SubscriptionNotificationBehaviour/MQTT >"$out/console.txt" 2>&1 || true
tail -4 "$out/console.txt" | head -2

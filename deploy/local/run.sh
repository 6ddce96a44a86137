#!/usr/bin/env bash
# Local topology as separate processes on loopback: redis-server + gateway + two inference nodes (demo model), the
# nodes publishing heartbeats to that redis-server under the prefix "reg" (see docs/gateway.md).
# Usage: deploy/local/run.sh            (Ctrl+C stops everything it started, by pid)
# Env:   REDIS_PORT (6390) GATEWAY_PORT (8080) NODE1_PORT (8081) NODE2_PORT (8082) CONFIGURATION (Release)
#        DEV_KEY (tenant key of tenant "dev"), ADMIN_KEY, MODEL_PATH (models/demo), NODE_THREADS (1)
#        NODE_CMD: to start nodes differently; it runs with NODE_ID, NODE_PORT, NODE_URL, REDIS, MODEL_PATH in the env.
set -euo pipefail
cd "$(dirname "$0")/../.."

REDIS_PORT=${REDIS_PORT:-6390}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
NODE1_PORT=${NODE1_PORT:-8081}
NODE2_PORT=${NODE2_PORT:-8082}
CONFIGURATION=${CONFIGURATION:-Release}
DEV_KEY=${DEV_KEY:-sk-dev-local-only}
ADMIN_KEY=${ADMIN_KEY:-sk-admin-local-only}
MODEL_PATH=$(realpath "${MODEL_PATH:-models/demo}")
NODE_THREADS=${NODE_THREADS:-1}
BASE_MODEL_ID=$(basename "$MODEL_PATH")
BIN="bin/${CONFIGURATION}/net10.0/linux-x64"
NODE_CMD=${NODE_CMD:-"exec dotnet src/Inference.Node/${BIN}/Serving.Inference.Node.dll --Node:ModelPath \"\$MODEL_PATH\" --Node:Port \$NODE_PORT --Node:Threads ${NODE_THREADS} --Node:Redis \"\$REDIS\" --Node:Id \$NODE_ID --Node:AdvertisedUrl \$NODE_URL --Logging:LogLevel:Microsoft.AspNetCore Warning"}
REDIS="127.0.0.1:${REDIS_PORT}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server" >&2; exit 1; }
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/tmp/serving-redis.log 2>&1 &
pids+=($!)

dotnet build src/Gateway -c "$CONFIGURATION" -v q -nologo >/dev/null
dotnet build src/Inference.Node -c "$CONFIGURATION" -v q -nologo >/dev/null
dotnet "src/Gateway/${BIN}/Serving.Gateway.dll" \
  --urls "http://127.0.0.1:${GATEWAY_PORT}" \
  --AdapterStore:RedisConnectionString "${REDIS},abortConnect=false" \
  --Gateway:BaseModels:"$BASE_MODEL_ID" "$MODEL_PATH/config.json" \
  --Gateway:Tenancy:StaticKeys:0:Key "$ADMIN_KEY" --Gateway:Tenancy:StaticKeys:0:Role admin \
  --Gateway:Tenancy:StaticKeys:1:Key "$DEV_KEY" --Gateway:Tenancy:StaticKeys:1:Tenant dev \
  --Logging:LogLevel:Microsoft.AspNetCore Warning --Logging:LogLevel:Yarp Warning &
pids+=($!)

for n in 1 2; do
  port_var="NODE${n}_PORT"; port=${!port_var}
  NODE_ID="node-$n" NODE_PORT="$port" NODE_URL="http://127.0.0.1:${port}" REDIS="$REDIS" MODEL_PATH="$MODEL_PATH" bash -c "$NODE_CMD" &
  pids+=($!)
done

# Ready when the gateway's view holds both nodes (its serving_gateway_nodes gauge).
for _ in $(seq 1 600); do
  if curl -s "http://127.0.0.1:${GATEWAY_PORT}/metrics" 2>/dev/null | grep -qE '^serving_gateway_nodes(\{[^}]*\})? 2$'; then ready=1; break; fi
  sleep 0.1
done
[[ -n "${ready:-}" ]] || { echo "the gateway did not see two nodes within 60 s" >&2; exit 1; }

cat <<MSG

Gateway:  http://127.0.0.1:${GATEWAY_PORT}   (OpenAPI UI: /scalar/v1, metrics: /metrics, readiness: /health/ready)
Nodes:    node-1 http://127.0.0.1:${NODE1_PORT}, node-2 http://127.0.0.1:${NODE2_PORT} (heartbeats in redis ${REDIS}, prefix reg)
Try:
  curl -s http://127.0.0.1:${GATEWAY_PORT}/v1/chat/completions -H "Authorization: Bearer ${DEV_KEY}" \\
    -H 'Content-Type: application/json' -d '{"model":"${BASE_MODEL_ID}","messages":[{"role":"user","content":"Tell me a fortune"}],"max_tokens":48}'
MSG
wait

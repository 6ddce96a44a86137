#!/usr/bin/env bash
# Local topology as separate processes on loopback: redis-server + gateway + two inference nodes.
# Usage: deploy/local/run.sh            (Ctrl+C stops everything it started, by pid)
# Env:   REDIS_PORT (6390) GATEWAY_PORT (8080) NODE1_PORT (8081) NODE2_PORT (8082)
#        DEV_KEY (tenant key "dev"), ADMIN_KEY, BASE_MODEL_ID (demo), BASE_MODEL_CONFIG (path to config.json)
#        NODE_CMD: command that starts one inference node; it receives NODE_ID, NODE_PORT, NODE_URL, REDIS in the env.
#        PLACEHOLDER until the node (branch `node`) lands: the node must publish heartbeats with
#        Serving.AdapterStore.Registry.NodeRegistry under the prefix "reg" (see docs/gateway.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

REDIS_PORT=${REDIS_PORT:-6390}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
NODE1_PORT=${NODE1_PORT:-8081}
NODE2_PORT=${NODE2_PORT:-8082}
DEV_KEY=${DEV_KEY:-sk-dev-local-only}
ADMIN_KEY=${ADMIN_KEY:-sk-admin-local-only}
BASE_MODEL_ID=${BASE_MODEL_ID:-demo}
NODE_CMD=${NODE_CMD:-"echo 'set NODE_CMD to start a node (e.g. dotnet run --project src/Inference.Node -- --urls \$NODE_URL)'; sleep infinity"}
REDIS="127.0.0.1:${REDIS_PORT}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server" >&2; exit 1; }
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/tmp/serving-redis.log 2>&1 &
pids+=($!)

dotnet build src/Gateway -c Release -v q >/dev/null
gateway_args=(
  --urls "http://127.0.0.1:${GATEWAY_PORT}"
  --AdapterStore:RedisConnectionString "${REDIS},abortConnect=false"
  --Gateway:Tenancy:StaticKeys:0:Key "$ADMIN_KEY" --Gateway:Tenancy:StaticKeys:0:Role admin
  --Gateway:Tenancy:StaticKeys:1:Key "$DEV_KEY" --Gateway:Tenancy:StaticKeys:1:Tenant dev
)
if [[ -n "${BASE_MODEL_CONFIG:-}" ]]; then gateway_args+=(--Gateway:BaseModels:"$BASE_MODEL_ID" "$BASE_MODEL_CONFIG"); fi
dotnet src/Gateway/bin/Release/net10.0/linux-x64/Serving.Gateway.dll "${gateway_args[@]}" &
pids+=($!)

for n in 1 2; do
  port_var="NODE${n}_PORT"; port=${!port_var}
  NODE_ID="node-$n" NODE_PORT="$port" NODE_URL="http://127.0.0.1:${port}" REDIS="$REDIS" bash -c "$NODE_CMD" &
  pids+=($!)
done

cat <<MSG

Gateway:  http://127.0.0.1:${GATEWAY_PORT}   (OpenAPI UI: /scalar/v1, metrics: /metrics, readiness: /health/ready)
Try:
  curl -s http://127.0.0.1:${GATEWAY_PORT}/v1/chat/completions -H "Authorization: Bearer ${DEV_KEY}" \\
    -H 'Content-Type: application/json' -d '{"model":"${BASE_MODEL_ID}","messages":[{"role":"user","content":"Hello"}],"stream":true}'
MSG
wait

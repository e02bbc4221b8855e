#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs every test.
#   protoc (protobuf-compiler)   real-protoc plugin tests and the protox/protoc comparison
#   etcd, etcdctl (etcd-server, etcd-client)  the etcd registry tests, against a real server
#   openssl                      certificates for the TLS etcd test
#   python3, nginx               real-world HTTP backends for the http gateway (gateway_backends)
#   python grpcio, grpcio-tools, grpcio-reflection  gRPC clients from another implementation
#   python grpcio-health-checking                   the standard health service, as grpcio asks it
#   python grpcio-status (googleapis-common-protos)  google.rpc error details as grpcio sends them
#   python prometheus-client                         the Prometheus project's OpenMetrics parser
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_missing=()
command -v protoc >/dev/null 2>&1 || apt_missing+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || apt_missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || apt_missing+=(etcd-client)
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_missing+=(nginx)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${apt_missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# The Python modules go into the project's own directory (target/python), not into the system's
# Python: Debian marks that one externally managed (PEP 668) and its pip refuses to install there.
python_deps="$PWD/target/python"
export PYTHONPATH="$python_deps${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c 'import grpc, grpc_tools, grpc_reflection, grpc_health, grpc_status, prometheus_client' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "scripts/test.sh: installing python3-pip" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  echo "scripts/test.sh: installing Python grpcio, grpcio-tools, grpcio-reflection, grpcio-health-checking, grpcio-status and prometheus-client into $python_deps" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$python_deps" \
    grpcio grpcio-tools grpcio-reflection grpcio-health-checking grpcio-status prometheus-client
  python3 -c 'import grpc, grpc_tools, grpc_reflection, grpc_health, grpc_status, prometheus_client'
fi

cargo test --workspace --locked "$@"
# The http handler's suites once more with the express lane off, so the hyper path keeps being
# tested on the plain GETs the lane takes by default (tests that need one path name it).
# `--workspace`, as above, so the dependencies are built with the same features and reused:
# with `-p rmicro` cargo unifies fewer features and builds the whole tree a second time.
MICRO_API_EXPRESS_LANE=false cargo test --workspace --locked --test gateway --test gateway_backends --test gateway_logs --test gateway_signals "$@"

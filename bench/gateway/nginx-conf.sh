# Sourced by run.sh and count.sh: nginx's configuration for the gateway benchmark.
#
#   nginx_conf DIR BACKEND WORKERS LISTEN [FWD_LISTEN]
#
# prints a configuration keeping its files in DIR, with a plain `proxy_pass` to BACKEND on
# LISTEN (the target's peer) and, given FWD_LISTEN, the same also telling the backend what the
# gateway tells it (the client's Host and address) there.
nginx_conf() {
  local dir=$1 backend=$2 workers=$3 listen=$4 fwd=${5:-}
  cat <<EOF
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/client_body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  upstream backend {
    server $backend;
    keepalive 64;
  }
  server {
    listen $listen;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
EOF
  if [[ -n $fwd ]]; then
    # The same work per request as the gateway's, for comparison (the target is against the
    # plain one above).
    cat <<EOF
  server {
    listen $fwd;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
EOF
  fi
  echo "}"
}

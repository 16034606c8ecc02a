#!/bin/bash
# The smallest custom runtime for Ignis's `lambda` runtime (and AWS Lambda's provided.al2023):
# speaks the Lambda Runtime API with bash alone (/dev/tcp) and answers each event with itself.
# `ignis bench --runtime lambda` deploys it as `bootstrap`.
export LC_ALL=C
host=${AWS_LAMBDA_RUNTIME_API%:*}
port=${AWS_LAMBDA_RUNTIME_API##*:}

# request METHOD PATH [BODY [HEADER]]: one HTTP/1.1 exchange; sets status and body and, from
# `next`, id, deadline, arn and trace.
request() {
  exec 3<>"/dev/tcp/$host/$port" || exit 1
  printf '%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n%s' \
    "$1" "$2" "$host" "${#3}" "${4:+$4$'\r\n'}" "$3" >&3
  local line len=0
  IFS= read -r line <&3 || exit 1
  status=${line#* }
  status=${status%% *}
  while IFS= read -r line <&3; do
    line=${line%$'\r'}
    [ -z "$line" ] && break
    case "${line,,}" in
      lambda-runtime-aws-request-id:*) id=${line#*: } ;;
      lambda-runtime-deadline-ms:*) deadline=${line#*: } ;;
      lambda-runtime-invoked-function-arn:*) arn=${line#*: } ;;
      lambda-runtime-trace-id:*) trace=${line#*: } ;;
      content-length:*) len=${line#*: } ;;
    esac
  done
  body=
  [ "$len" -gt 0 ] && IFS= read -r -N "$len" body <&3
  exec 3<&-
}
inv=/2018-06-01/runtime/invocation

# The loop (the end-to-end tests replace what follows this line with their own).
while true; do
  request GET $inv/next
  [ "$status" = 200 ] || exit 1
  request POST "$inv/$id/response" "$body"
done

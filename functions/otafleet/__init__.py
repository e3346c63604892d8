"""otafleet core: everything both Lambda functions share.

Modules, one job each:
  config       settings read once from the environment
  models       the records: products, channels, releases, devices
  protocol     what stock ESP update clients send, parsed and validated
  versions     version ordering for policy and reports
  rollout      deterministic rollout buckets
  decision     the pure update decision
  imageformat  ESP8266 / ESP32 firmware image parsing
  ingest       validate and register an uploaded image
  storage      DynamoDB and S3 adapters (the only boto3 users)
  delivery     turn a decision into an HTTP answer
  service      an update check end to end: load, decide, record, deliver
  sandbox      a Lambda sandbox's garbage collector, tuned for its cold start
"""

from otafleet import sandbox

sandbox.starting()

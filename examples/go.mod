module github.com/wxa-sidecar/wxa-sidecar/examples

go 1.26.0

require (
	github.com/silenceper/wechat/v2 v2.1.10
	github.com/wxa-sidecar/wxa-sidecar v0.0.0
)

replace github.com/wxa-sidecar/wxa-sidecar => ../

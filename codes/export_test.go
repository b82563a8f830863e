package codes

// CheckDecodable is exported to the benchmark: the decode check alone,
// what each image WeChat sends costs on the miss path.
var CheckDecodable = checkDecodable

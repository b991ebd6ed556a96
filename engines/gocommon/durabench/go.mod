module github.com/durabench/durabench/engines/gocommon/durabench

go 1.25.0

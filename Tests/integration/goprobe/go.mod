module ztap.test/goprobe

go 1.19

module minkms.bench

go 1.24

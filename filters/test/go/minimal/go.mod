module sluice.test/minimal

go 1.24

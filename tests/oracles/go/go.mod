module refresh-gate/oracle

go 1.19

delete from {target} where {key} in (select {key} from {stage}_write where existed)

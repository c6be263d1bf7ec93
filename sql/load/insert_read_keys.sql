-- The staged rows' keys, kept before the stage is emptied for the next batch.
insert into {read} ({key}) select {key} from {stage}

-- The attached warehouse file as this connection's default database: unqualified table
-- names are its tables.
use {alias}

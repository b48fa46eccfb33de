-- One database per service, owned by POSTGRES_USER (runs once, on an empty data volume).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;

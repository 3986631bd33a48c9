// One librdkafka mock cluster (3 brokers, real Kafka wire protocol) per test run, started through
// kcat; tests read its bootstrap list with inject('kafkaBrokers') (comma-separated host:port).
// Limits of the mock: topics are auto-created with 4 partitions on first produce, admin
// createTopics does not work, no SASL/TLS. A group rebalance takes session_timeout - 1 s, so tests
// use short session timeouts.
import { spawn, type ChildProcess } from 'node:child_process';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
  }
}

export async function startKafkaMock(brokers = 3): Promise<{ brokers: string; stop: () => Promise<void> }> {
  // The consumer on __keepalive only keeps kcat (and so the mock cluster inside it) alive.
  const child: ChildProcess = spawn(
    'kcat',
    ['-b', '127.0.0.1:1', '-X', `test.mock.num.brokers=${brokers}`, '-C', '-t', '__keepalive', '-o', 'end', '-u', '-q'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const address = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`kcat did not start a Kafka mock cluster within 10 s: ${text.slice(-500)}`)), 10_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start kcat (install it: apt-get install -y kcat): ${err.message}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`kcat exited with code ${code} before the mock cluster was up: ${text.slice(-500)}`));
    });
    child.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /Mock cluster enabled: .*? replaced with (\S+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  child.stderr!.resume();
  return {
    brokers: address,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export async function setup(provide: (key: string, value: unknown) => void): Promise<() => Promise<void>> {
  const mock = await startKafkaMock();
  provide('kafkaBrokers', mock.brokers);
  return mock.stop;
}

import Metrics
import Prometheus
import Synchronization

/// swift-metrics → Prometheus: bootstrapped once per process by the composition root.
enum MetricsExport {
    private static let registryBox = Mutex<PrometheusCollectorRegistry?>(nil)

    /// The process's registry, bootstrapping the metrics system on first use.
    static func bootstrap() -> PrometheusCollectorRegistry {
        registryBox.withLock { existing in
            if let existing { return existing }
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [.milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100),
                                                       .milliseconds(500), .seconds(1), .seconds(5), .seconds(30), .seconds(120), .seconds(600)]
            factory.defaultValueHistogramBuckets = [0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800]
            MetricsSystem.bootstrap(factory)
            existing = registry
            return registry
        }
    }

    static func text(_ registry: PrometheusCollectorRegistry) -> String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}
